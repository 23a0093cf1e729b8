/*
 * cli.h - the pieces of the bitraft command shared by its subcommands.
 *
 *   main.c    dispatch and usage
 *   local.c   demo, local ...: the engine directly on a data directory
 *   serve.c   serve: the HTTP server
 *   client.c  get, put, del, range, status, compact, member: a client of a
 *             server (libcurl)
 *   check.c   check: offline verification of a data directory
 *
 * Exit codes, for every subcommand: 0 ok, 1 key not found, 2 usage error,
 * 3 store or server error.
 */
#ifndef BR_CLI_H
#define BR_CLI_H

#include <stddef.h>
#include <stdio.h>

#define EXIT_NOTFOUND 1
#define EXIT_USAGE    2
#define EXIT_STORE    3

void cli_usage(FILE *to);

int cmd_demo(int argc, char **argv);
int cmd_local(int argc, char **argv);
int cmd_serve(int argc, char **argv);
/* Exit 0 clean, 1 problems found, 2 usage, 3 cannot open. */
int cmd_check(int argc, char **argv);
/* cmd is "get", "put", "del", "range" or "status". */
int cmd_client(const char *cmd, int argc, char **argv);
/* member list|add|remove: cluster membership through a server. */
int cmd_member(int argc, char **argv);

/* Reads all of standard input into a malloc'd buffer (NULL on failure). */
char *cli_read_stdin(size_t *len);

/* Prints bytes with non-printable ones as \xNN. */
void cli_print_escaped(const void *p, size_t n);

#endif /* BR_CLI_H */
