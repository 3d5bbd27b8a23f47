// Functions for the uretprobe exception test: an exception thrown by a
// probed function unwinds through another probed frame.
#include <stdexcept>

extern "C" {
__attribute__((noinline)) long rw_cxx_thrower(long x) {
    if (x > 2)
        throw std::runtime_error("too big");
    return x * 10;
}

__attribute__((noinline)) long rw_cxx_middle(long x) {
    long r = rw_cxx_thrower(x);
    return r + 1;
}

long rw_cxx_catcher(long x) {
    try {
        return rw_cxx_middle(x);
    } catch (const std::exception &) {
        return -1;
    }
}
}
