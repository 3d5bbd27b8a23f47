/* Name lookups for the gethostlatency.bt test: getaddrinfo, gethostbyname
 * and gethostbyname2 of "localhost" (answered from /etc/hosts, no network).
 * usage: resolver [rounds] */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1;
    for (int i = 0; i < rounds; i++) {
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        if (getaddrinfo("localhost", NULL, &hints, &res) == 0)
            freeaddrinfo(res);
        (void)gethostbyname("localhost");
        (void)gethostbyname2("localhost", AF_INET);
    }
    fprintf(stderr, "resolver: done\n");
    return 0;
}
