/* The record rbtool's programs send through the ring buffer. */
#ifndef RBTOOL_H
#define RBTOOL_H
struct event {
	__u64 arg;
	__u64 ret;
	__u32 same_process;
	char comm[16];
};
#endif
