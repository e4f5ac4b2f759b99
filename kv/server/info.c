/*
 * info — INFO's text: the server, clients, persistence, stats and keyspace
 * sections, with Redis's field names where Redis has the field
 * (redis_version, connected_clients, keyspace_hits, db0:keys=...) and
 * kvd's own for the log (log_bytes, fdatasync_*, compaction_*, scrub_*,
 * recovery_*).
 *
 * Owns: nothing; reads the store's statistics and the counters.
 * Never: blocks on a lock held by a client's request.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "clock.h"
#include "kv_scrub.h"
#include "repl.h"
#include "registry.h"
#include "server_state.h"

/* INFO replication: Redis 7's fields in its order, then kvd's own. */
static void kvd_info_replication(kvd_server *srv, sbuf *o)
{
    kvrepl_info in;
    kvrepl_info_get(srv->env.repl, &in);
    char line[1024];
    int n;
#define LINE(...)                                                                \
    do {                                                                         \
        n = snprintf(line, sizeof line, __VA_ARGS__);                            \
        sb_add(o, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);     \
    } while (0)
    LINE("# Replication\r\nrole:%s\r\n", in.replica ? "slave" : "master");
    if (in.replica) {
        LINE("master_host:%s\r\nmaster_port:%d\r\nmaster_link_status:%s\r\n", in.master_host, in.master_port,
             in.link_status);
        LINE("master_last_io_seconds_ago:%lld\r\nmaster_sync_in_progress:%d\r\n", in.last_io_s, in.sync_in_progress);
        LINE("slave_read_repl_offset:%" PRIu64 "\r\nslave_repl_offset:%" PRIu64 "\r\n", in.applied, in.applied);
        if (in.link_status[0] != 'u') LINE("master_link_down_since_seconds:%lld\r\n", in.link_down_s);
        LINE("slave_priority:%d\r\nslave_read_only:1\r\nreplica_announced:%d\r\n", in.priority,
             __atomic_load_n(&srv->env.cfg->replica_announced, __ATOMIC_RELAXED));
    }
    LINE("connected_slaves:%zu\r\n", in.nreplicas);
    for (size_t i = 0; i < in.nreplicas; i++) {
        const kvrepl_replica_info *r = &in.replicas[i];
        LINE("slave%zu:ip=%s,port=%d,state=%s,offset=%" PRIu64 ",lag=%lld,fsynced=%" PRIu64 "\r\n", i, r->ip, r->port,
             r->state, r->ack, r->lag_s, r->fack);
    }
    LINE("master_failover_state:%s\r\nmaster_replid:%s\r\nmaster_replid2:%s\r\n", kvrepl_failover_state(srv->env.repl),
         in.replid, in.replid2);
    LINE("master_repl_offset:%" PRIu64 "\r\n", in.offset);
    if (in.has_second)
        LINE("second_repl_offset:%" PRIu64 "\r\n", in.second_off);
    else
        LINE("second_repl_offset:-1\r\n");
    uint64_t backlog = __atomic_load_n(&srv->env.cfg->repl_backlog_size, __ATOMIC_RELAXED);
    LINE("repl_backlog_active:1\r\nrepl_backlog_size:%" PRIu64 "\r\n", backlog);
    LINE("repl_fsynced_offset:%" PRIu64 "\r\n", in.synced);
    LINE("repl_bytes_sent:%" PRIu64 "\r\nrepl_records_sent:%" PRIu64 "\r\nrepl_bytes_received:%" PRIu64
         "\r\nrepl_records_received:%" PRIu64 "\r\n",
         in.bytes_sent, in.records_sent, in.bytes_received, in.records_received);
    LINE("repl_stream_errors:%" PRIu64 "\r\nrepl_divergent_records:%" PRIu64 "\r\nrepl_sync_timeouts:%" PRIu64
         "\r\n\r\n",
         in.stream_errors, in.divergent_records, in.sync_timeouts);
#undef LINE
    kvrepl_info_free(&in);
}

static int want(const char *section, const char *name)
{
    return !section || !strcasecmp(section, "all") || !strcasecmp(section, "default") ||
           !strcasecmp(section, "everything") || !strcasecmp(section, name);
}

/* One piece on purpose: INFO's sections in their order, each a run of
 * LINE calls; split up, the field order would be harder to check against
 * Redis's. */
void kvd_info(kvd_server *srv, const char *section, sbuf *o)
{
    char sec[64] = {0};
    if (section) {
        snprintf(sec, sizeof sec, "%s", section);
        section = sec;
    }
    kv_stats st;
    kv_get_stats(srv->env.store, &st);
    char line[1024];
    int n;
#define LINE(...)                                              \
    do {                                                       \
        n = snprintf(line, sizeof line, __VA_ARGS__);          \
        sb_add(o, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1); \
    } while (0)
    long long now = kvd_mstime();
    if (want(section, "server")) {
        struct utsname u;
        uname(&u);
        LINE("# Server\r\n");
        LINE("kvd_version:%s\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n", KVD_VERSION);
        LINE("os:%s %s %s\r\narch_bits:%d\r\n", u.sysname, u.release, u.machine, (int)(sizeof(void *) * 8));
        LINE("process_id:%ld\r\nrun_id:%s\r\ntcp_port:%d\r\n", (long)getpid(), srv->env.run_id, srv->port);
        LINE("uptime_in_seconds:%lld\r\nuptime_in_days:%lld\r\n", (now - srv->start_ms) / 1000,
             (now - srv->start_ms) / 86400000);
        LINE("hz:%d\r\nio_threads:%d\r\n", __atomic_load_n(&srv->env.cfg->expire_hz, __ATOMIC_RELAXED), srv->nworkers);
        LINE("data_dir:%s\r\nconfig_file:%s\r\n\r\n", srv->env.cfg->dir, srv->env.cfg->config_file ? srv->env.cfg->config_file : "");
    }
    if (want(section, "clients")) {
        LINE("# Clients\r\nconnected_clients:%lld\r\nmaxclients:%d\r\n",
             (long long)__atomic_load_n(&srv->env.n.connected_clients, __ATOMIC_RELAXED),
             __atomic_load_n(&srv->env.cfg->maxclients, __ATOMIC_RELAXED));
        uint64_t obuf_max = 0;
        for (int i = 0; i < srv->nworkers; i++) {
            uint64_t m = __atomic_load_n(&srv->workers[i].io.obuf_recent_max, __ATOMIC_RELAXED);
            if (m > obuf_max) obuf_max = m;
        }
        LINE("client_recent_max_output_buffer:%" PRIu64 "\r\n\r\n", obuf_max);
    }
    if (want(section, "persistence")) {
        char reason[512];
        int fs = kv_failstop_reason(srv->env.store, reason, sizeof reason);
        const kvr_report *r = kv_recovery_report(srv->env.store);
        LINE("# Persistence\r\n");
        LINE("loading:0\r\naof_enabled:1\r\nfsync_policy:%s\r\n", kv_fsync_name(st.fsync));
        LINE("log_bytes:%" PRIu64 "\r\nlive_bytes:%" PRIu64 "\r\ndead_bytes:%" PRIu64 "\r\n", st.log_bytes,
             st.live_bytes, st.dead_bytes);
        LINE("segments:%u\r\nactive_segment:%u\r\nrecords:%" PRIu64 "\r\nlast_seq:%" PRIu64 "\r\n", st.segments,
             st.active_segment, st.records, st.last_seq);
        LINE("fdatasyncs:%" PRIu64 "\r\nfdatasync_avg_us:%" PRIu64 "\r\nfdatasync_max_us:%" PRIu64 "\r\n",
             st.fdatasyncs, st.fdatasyncs ? st.fdatasync_us / st.fdatasyncs : 0, st.fdatasync_max_us);
        LINE("group_commits:%" PRIu64 "\r\nwrites_per_group_commit:%.2f\r\nwrites_per_fdatasync:%.2f\r\n", st.groups,
             st.groups ? (double)st.group_writes / (double)st.groups : 0.0,
             st.fdatasyncs ? (double)st.synced_writes / (double)st.fdatasyncs : 0.0);
        LINE("failstop:%d\r\nfailstop_reason:%s\r\n", fs, reason);
        char badname[32] = "";
        if (st.segments_bad) kv_seg_name(badname, sizeof badname, st.bad_segment);
        LINE("segments_bad:%u\r\nsegment_bad_last:%s\r\nsegment_bad_last_offset:%" PRIu64 "\r\n", st.segments_bad,
             badname, st.bad_offset);
        LINE("expiry_tombstones:%" PRIu64 "\r\nexpiry_tombstones_pending:%" PRIu64 "\r\n", st.expiry_tombstones,
             st.expiry_pending);
        kv_compact_progress cp;
        kv_compact_progress_get(srv->env.store, &cp);
        LINE("compaction_in_progress:%d\r\ncompaction_progress_pct:%.1f\r\ncompactions:%" PRIu64
             "\r\ncompaction_bytes_reclaimed:%" PRIu64 "\r\ncompaction_last_status:%s\r\n"
             "compaction_last_switch_ms:%.1f\r\n",
             cp.running, cp.running && cp.bytes_total ? 100.0 * (double)cp.bytes_done / (double)cp.bytes_total : 0.0,
             cp.runs, cp.bytes_reclaimed, cp.last_status == KV_OK ? "ok" : kv_strerror(cp.last_status),
             cp.last_switch_us / 1000.0);
        LINE("hint_files:%u\r\nhint_files_pending:%u\r\nhint_files_written:%" PRIu64 "\r\n", st.hint_files,
             st.hints_pending, st.hints_written);
        kv_scrub_stats ss = {0};
        if (srv->scrub) kv_scrub_get_stats(srv->scrub, &ss);
        LINE("scrub_in_progress:%d\r\nscrub_bytes_checked:%" PRIu64 "\r\nscrub_last_completed:%" PRIu64
             "\r\nscrub_passes:%" PRIu64 "\r\nscrub_errors:%" PRIu64 "\r\nscrub_last_error:%s\r\n",
             ss.in_progress, ss.bytes_checked, ss.last_completed, ss.passes, ss.errors, ss.last_error);
        LINE("recovery_mode:%s\r\nrecovery_segments:%u\r\nrecovery_records:%" PRIu64 "\r\nrecovery_keys:%" PRIu64
             "\r\n",
             kvr_mode_name(r->mode), r->segments, r->records, r->keys);
        LINE("recovery_hints_used:%u\r\nrecovery_hints_rejected:%u\r\nrecovery_hints_written:%u\r\n",
             r->hints_used, r->hints_rejected, r->hints_written);
        LINE("recovery_torn_bytes_cut:%" PRIu64 "\r\nrecovery_unwritten_bytes_cut:%" PRIu64
             "\r\nrecovery_problems:%u\r\nrecovery_skipped_bytes:%" PRIu64 "\r\n",
             r->torn_bytes, r->unwritten_bytes, r->problems, r->skipped_bytes);
        LINE("recovery_rotations_completed:%u\r\nrecovery_compact_leftovers_removed:%u\r\nrecovery_ms:%.1f\r\n\r\n",
             r->rotations_completed, r->compact_leftovers, r->elapsed_us / 1000.0);
    }
    if (want(section, "stats")) {
        LINE("# Stats\r\n");
        LINE("total_connections_received:%" PRIu64 "\r\ntotal_commands_processed:%" PRIu64
             "\r\ninstantaneous_ops_per_sec:%" PRIu64 "\r\n",
             counter_get(&srv->env.n.total_connections), counter_get(&srv->env.n.total_commands), counter_get(&srv->env.n.ops_sec));
        LINE("rejected_connections:%" PRIu64 "\r\nexpired_keys:%" PRIu64 "\r\nkeyspace_hits:%" PRIu64
             "\r\nkeyspace_misses:%" PRIu64 "\r\n",
             counter_get(&srv->env.n.rejected_connections),
             counter_get(&srv->env.n.expired_active) + st.expired_on_access - counter_get(&srv->env.n.expired_access_base),
             counter_get(&srv->env.n.hits),
             counter_get(&srv->env.n.misses));
        LINE("client_output_buffer_limit_disconnections:%" PRIu64 "\r\n", counter_get(&srv->env.n.obuf_disconnections));
        long long nch, npat;
        reg_counts(srv->env.reg, &nch, &npat);
        LINE("pubsub_channels:%lld\r\npubsub_patterns:%lld\r\npubsubshard_channels:0\r\n", nch, npat);
        kvrepl_info ri;
        kvrepl_info_get(srv->env.repl, &ri);
        LINE("sync_full:%" PRIu64 "\r\nsync_partial_ok:%" PRIu64 "\r\nsync_partial_err:%" PRIu64 "\r\n\r\n",
             ri.sync_full, ri.sync_partial_ok, ri.sync_partial_err);
        kvrepl_info_free(&ri);
    }
    if (want(section, "replication")) kvd_info_replication(srv, o);
    if (want(section, "keyspace")) {
        LINE("# Keyspace\r\n");
        if (st.keys) LINE("db0:keys=%" PRIu64 ",expires=%" PRIu64 ",avg_ttl=0\r\n", st.keys, st.expires);
    }
#undef LINE
}
