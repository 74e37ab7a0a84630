/* anvil.h - the anvil daemon's parts:
 *   anvil.c        connections from smtpd, request dispatch
 *   anvil_stats.c  periodic expiry and the "statistics:" log lines */
#ifndef POSTINO_ANVIL_ANVIL_H
#define POSTINO_ANVIL_ANVIL_H

struct server;
struct anvil_table;

/* Seconds between "statistics:" lines (Postfix's anvil_status_update_time). */
#define ANVIL_STATUS_UPDATE_SECS 600

/* Monotonic milliseconds: the table's clock. */
long long anvil_now_ms(void);
/* Arm the expiry and statistics timers on s->base. */
void anvil_timers_start(struct server *s, struct anvil_table *t);
void anvil_timers_stop(void);
/* Log the maxima since the last call (if any) and reset them. */
void anvil_stats_log(struct anvil_table *t, long long now);

#endif
