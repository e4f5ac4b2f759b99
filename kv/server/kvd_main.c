/*
 * kvd — the server's main(): parse the configuration, open the log, start
 * the server (recovery runs first), serve until told to stop.
 * Exit codes: 0 clean shutdown, 1 runtime failure (refused start, locked
 * data directory, cannot listen, final sync failed), 2 usage error.
 */
#include <stdio.h>
#include <string.h>

#include "kv_mem.h"
#include "kvd_config.h"
#include "kvd_log.h"
#include "kvd_server.h"

int main(int argc, char **argv)
{
    kv_mem_policy();
    kvd_config cfg;
    kvd_config_init(&cfg);
    char err[1024];
    kvd_args_result ar = kvd_config_parse_args(&cfg, argc, argv, err, sizeof err);
    if (ar == KVD_ARGS_EXIT_OK) {
        kvd_config_free(&cfg);
        return 0;
    }
    if (ar == KVD_ARGS_ERROR) {
        fprintf(stderr, "kvd: %s\n", err);
        kvd_config_free(&cfg);
        return 2;
    }
    if (kvd_log_open(cfg.logfile, cfg.log_level) != 0) {
        fprintf(stderr, "kvd: cannot open log file %s\n", cfg.logfile);
        kvd_config_free(&cfg);
        return 1;
    }
    kvd_log(KVD_LOG_NOTICE, "kvd %s starting: port %d, bind %s, data directory %s, fsync %s", KVD_VERSION, cfg.port,
            cfg.bind, cfg.dir, kv_fsync_name(cfg.fsync));
    kvd_server *srv = kvd_server_start(&cfg, err, sizeof err);
    if (!srv) {
        kvd_log(KVD_LOG_WARNING, "%s", err);
        if (cfg.logfile && *cfg.logfile) fprintf(stderr, "kvd: %s\n", err);
        kvd_log_close();
        kvd_config_free(&cfg);
        return 1;
    }
    int rc = kvd_server_run(srv);
    kvd_log_close();
    kvd_config_free(&cfg);
    return rc;
}
