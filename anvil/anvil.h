/* anvil.h - the anvil daemon's parts:
 *   anvil.c        main: start-up, reload, stop
 *   anvil_serve.c  the connections from smtpd (common/util/conn)
 *   anvil_rate.c   the table: counts, rate windows, the request protocol
 *   anvil_stats.c  the clock, periodic expiry and the "statistics:" lines */
#ifndef POSTINO_ANVIL_ANVIL_H
#define POSTINO_ANVIL_ANVIL_H

struct server;
struct anvil_table;
struct event_base;

/* Seconds between "statistics:" lines (Postfix's anvil_status_update_time). */
#define ANVIL_STATUS_UPDATE_SECS 600

/* Monotonic milliseconds: the table's clock. */
long long anvil_now_ms(void);
/* Serve a new smtpd connection (fd accepted) from table t. */
void anvil_serve_accept(struct event_base *base, int fd, struct anvil_table *t);
/* Close every connection now (stop), without waiting for the peers. */
void anvil_serve_close_all(void);
/* Arm the expiry and statistics timers on s->base. */
void anvil_timers_start(struct server *s, struct anvil_table *t);
void anvil_timers_stop(void);
/* Log the maxima since the last call (if any) and reset them. */
void anvil_stats_log(struct anvil_table *t, long long now);

#endif
