/*
 * main.c - the bitraft command: dispatch to the subcommands (see cli.h).
 *
 *   bitraft serve [flags] | bitraft serve port P data-dir D distributed false
 *   bitraft get|put|del|range|status ... [--server host:port]
 *   bitraft demo | bitraft local ...
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_usage(FILE *to) {
    fprintf(
        to,
        "usage: bitraft serve [--port P] [--bind ADDR] [--data-dir D] [--sync POLICY] ...\n"
        "       bitraft serve port P data-dir D distributed false   (the original's form)\n"
        "       bitraft serve --peers 1=H:P,2=H:P,3=H:P [--node-id N] ...   (cluster mode)\n"
        "       bitraft serve port P data-dir D   (one of the original's cluster 4000/5000/6000)\n"
        "       bitraft get KEY                [--server HOST:PORT]\n"
        "       bitraft put KEY [VALUE]        [--server HOST:PORT]\n"
        "       bitraft del KEY                [--server HOST:PORT]\n"
        "       bitraft range [START [END]] [--limit N] [--server HOST:PORT]\n"
        "       bitraft status                 [--server HOST:PORT]\n"
        "       bitraft compact [MIN_DEAD_PCT] [--server HOST:PORT]   (starts a compaction)\n"
        "       bitraft member list            [--server HOST:PORT]   (cluster members)\n"
        "       bitraft member add ID RAFT_HOST:PORT [CLIENT_HOST:PORT] [--learner] [--wait S]\n"
        "       bitraft member remove ID       [--server HOST:PORT]\n"
        "       bitraft demo [--data-dir D]\n"
        "       bitraft local put KEY [VALUE] [--data-dir D] [--sync POLICY]\n"
        "       bitraft local get KEY [--data-dir D]\n"
        "       bitraft local del KEY [--data-dir D]\n"
        "       bitraft local range [START [END]] [--limit N] [--data-dir D]\n"
        "       bitraft local stats [--data-dir D]\n"
        "       bitraft check [--data-dir D]   (verify every record and hint, offline)\n"
        "VALUE is read from standard input when omitted. The server defaults to\n"
        "127.0.0.1:4000 (bitraft serve --help lists the server's flags).\n"
        "'local' opens the data directory directly (no server may hold it).\n"
        "Exit codes: 0 ok, 1 not found, 2 usage, 3 store or server error.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        cli_usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "demo") == 0)
        return cmd_demo(argc - 2, argv + 2);
    if (strcmp(cmd, "local") == 0)
        return cmd_local(argc - 2, argv + 2);
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 2, argv + 2);
    if (strcmp(cmd, "member") == 0 || strcmp(cmd, "members") == 0)
        return cmd_member(argc - 2, argv + 2);
    if (strcmp(cmd, "get") == 0 || strcmp(cmd, "put") == 0 || strcmp(cmd, "del") == 0 ||
        strcmp(cmd, "range") == 0 || strcmp(cmd, "status") == 0 || strcmp(cmd, "compact") == 0)
        return cmd_client(cmd, argc - 2, argv + 2);
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        cli_usage(stdout);
        return 0;
    }
    fprintf(stderr, "bitraft: unknown command %s\n", cmd);
    cli_usage(stderr);
    return EXIT_USAGE;
}
