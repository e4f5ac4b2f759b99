/*
 * repl_role — the node's role (repl.h): REPLICAOF's switch between
 * primary and replica, with PSYNC2's id shift on promotion, and the
 * lock-free role and link checks every command makes. Below the node's
 * life cycle (repl_node.c) and FAILOVER (repl_failover.c), which both
 * switch roles through kvrepl_replicaof.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "repl_int.h"

int kvrepl_replicaof(kvrepl *r, const char *host, int port, int *already, char *err, size_t errcap)
{
    *already = 0;
    for (const char *h = host; h && *h; h++)
        if ((unsigned char)*h <= ' ' || (unsigned char)*h >= 0x7f) {
            snprintf(err, errcap, "Invalid master host");
            return -1;
        }
    if (host && (!*host || strlen(host) > KVRSTATE_HOST_MAX)) {
        snprintf(err, errcap, "Invalid master host");
        return -1;
    }
    pthread_mutex_lock(&r->mu);
    kvrepl_state old = r->st;
    if (!host) {
        if (!r->st.master_host[0]) {
            *already = 1;
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        /* Promotion (PSYNC2): replicas of the old primary continue from
         * this node under the old id, up to this node's log end. */
        kv_repl_pos p;
        kv_repl_position(r->s, &p);
        memcpy(r->st.replid2, r->st.replid, sizeof r->st.replid2);
        r->st.second_off = p.applied_seq + 1;
        kvrepl_new_id(r->st.replid);
        r->st.master_host[0] = 0;
        r->st.master_port = 0;
    } else {
        if (!strcmp(r->st.master_host, host) && r->st.master_port == port) {
            *already = 1;
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        snprintf(r->st.master_host, sizeof r->st.master_host, "%s", host);
        r->st.master_port = port;
    }
    if (do_state_save(r) < 0) {
        r->st = old;
        pthread_mutex_unlock(&r->mu);
        snprintf(err, errcap, "cannot write the replication state in %s", r->dir);
        return -1;
    }
    r->link_gen++;
    __atomic_store_n(&r->link_up, 0, __ATOMIC_RELEASE);
    r->sync_in_progress = 0;
    r->link_state = "connect";
    if (host && r->link_down_since_ms == 0) r->link_down_since_ms = repl_wall_ms();
    if (r->link_fd >= 0) shutdown(r->link_fd, SHUT_RDWR); /* the link starts over */
    kv_set_replica(r->s, host != NULL);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (host)
        rlog(r, KV_LOG_INFO, "replication: now a replica of %s:%d", host, port);
    else
        rlog(r, KV_LOG_INFO, "replication: promoted to primary; new replication id %s, the old one %s valid up to offset %" PRIu64,
             r->st.replid, r->st.replid2, r->st.second_off - 1);
    if (host) feed_drop_all(r, 0); /* its replicas resync against its new history (Redis does the same) */
    return 0;
}

/* Both are asked for every command a client sends: no lock. The role is
 * the store's replica flag, which REPLICAOF sets under r->mu with the
 * state; link_up is stored atomically under r->mu. */
int kvrepl_is_replica(kvrepl *r)
{
    return kv_is_replica(r->s);
}

int kvrepl_link_down(kvrepl *r)
{
    return kv_is_replica(r->s) && !__atomic_load_n(&r->link_up, __ATOMIC_ACQUIRE);
}
