/*
 * Ground truth for the TCP tools: listens on a loopback port (127.0.0.1, or
 * ::1 with "6"), prints "port P", then makes N connections to itself; each
 * client sends exactly BYTES bytes and closes, the server reads to EOF and
 * closes. With "stall", loopback is taken down for 1.5 s while one client
 * sends (run it in a private network namespace), forcing retransmissions.
 *
 * usage: tcp_sessions N BYTES [4|6] [stall]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buffer[1 << 16];

int main(int argc, char **argv)
{
	long sessions = argc > 1 ? atol(argv[1]) : 10;
	long bytes = argc > 2 ? atol(argv[2]) : 1000;
	int v6 = argc > 3 && strcmp(argv[3], "6") == 0;
	int stall = argc > 4 && strcmp(argv[4], "stall") == 0;
	struct sockaddr_storage address = {};
	socklen_t length = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	struct timespec pause = { 0, 300000000L };
	int listener;

	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&address;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&address;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	listener = socket(address.ss_family, SOCK_STREAM, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&address, length) || listen(listener, 16) ||
	    getsockname(listener, (struct sockaddr *)&address, &length)) {
		perror("tcp_sessions: listen");
		return 1;
	}
	printf("port %d\n", ntohs(v6 ? ((struct sockaddr_in6 *)&address)->sin6_port
				  : ((struct sockaddr_in *)&address)->sin_port));
	fflush(stdout);
	nanosleep(&pause, NULL);
	for (long i = 0; i < sessions; i++) {
		int client = socket(address.ss_family, SOCK_STREAM, 0), server;
		long sent = 0, received = 0;
		ssize_t n;

		if (client < 0 || connect(client, (struct sockaddr *)&address, length)) {
			perror("tcp_sessions: connect");
			return 1;
		}
		server = accept(listener, NULL, NULL);
		if (stall && i == 0 && system("ip link set lo down"))
			return 1;
		while (sent < bytes) {
			long chunk = bytes - sent < (long)sizeof(buffer) ? bytes - sent : (long)sizeof(buffer);
			if ((n = write(client, buffer, chunk)) <= 0)
				return 1;
			sent += n;
			/* keep the server reading so the client never blocks on a full buffer */
			if (!stall && (n = read(server, buffer, sizeof(buffer))) > 0)
				received += n;
		}
		if (stall && i == 0) {
			struct timespec down = { 1, 500000000L };
			nanosleep(&down, NULL);
			if (system("ip link set lo up"))
				return 1;
		}
		close(client);
		while ((n = read(server, buffer, sizeof(buffer))) > 0)
			received += n;
		close(server);
		if (received != bytes) {
			fprintf(stderr, "tcp_sessions: received %ld of %ld bytes\n", received, bytes);
			return 1;
		}
	}
	nanosleep(&pause, NULL);
	return 0;
}
