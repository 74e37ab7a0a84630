/* params.c - every main.cf parameter postino knows, declared once.
 *
 * Names and meanings follow Postfix wherever the concept exists. The
 * table drives validation, "postino config" and the README's reference. */
#include "common/mail/conf.h"

#include <limits.h>

#define DAY (24LL * 3600)
#define T(n, d, mn, mx, u, s) { n, PARAM_TIME, d, mn, mx, u, s }
#define I(n, d, mn, mx, s) { n, PARAM_INT, d, mn, mx, 0, s }
#define S(n, d, s) { n, PARAM_STR, d, 0, 0, 0, s }
#define B(n, d, s) { n, PARAM_BOOL, d, 0, 1, 0, s }
#define L(n, d, s) { n, PARAM_LIST, d, 0, 0, 0, s }

const struct param_def param_table[] = {
    /* Identity */
    S("myhostname", "", "Internet hostname of this mail system (default: the system's FQDN)"),
    S("mydomain", "", "Internet domain name of this mail system (default: $myhostname minus its first label)"),
    S("myorigin", "$myhostname", "domain appended to an address without one (RCPT TO:<postmaster>)"),
    L("mydestination", "$myhostname, localhost.$mydomain, localhost", "domains this machine is final destination for"),
    L("mynetworks", "127.0.0.0/8 [::1]/128", "trusted client networks that may relay"),
    L("relay_domains", "", "domains (other than mydestination) we accept mail for from anyone"),
    S("relayhost", "", "send all non-local mail to this host ([host]:port skips MX lookup)"),
    L("transport_maps", "", "lookup tables mapping domain to transport:nexthop"),
    S("smtpd_banner", "$myhostname ESMTP postino", "text after 220 in the SMTP greeting"),
    S("mail_name", "postino", "mail system name in banners and logs"),
    /* Locations and ownership */
    S("config_directory", "/etc/postino", "directory with main.cf and master.cf (set from -c)"),
    S("queue_directory", "/var/spool/postino", "spool: queue files, index, sockets"),
    S("daemon_directory", "", "directory holding the postino daemons (default: next to the postino command)"),
    S("mail_owner", "postino", "unprivileged user the daemons run as when started by root"),
    S("maillog_file", "", "log file (empty: syslog; /dev/stderr: standard error)"),
    S("syslog_name", "postino", "program name prefix in log lines"),
    S("syslog_facility", "mail", "syslog facility when logging to syslog: mail, user, daemon, local0..local7, ..."),
    I("default_process_limit", "100", 1, 10000, "default maxproc for master.cf services"),
    /* smtpd */
    I("message_size_limit", "10240000", 0, LLONG_MAX, "maximal message size in bytes (0: no limit)"),
    I("smtpd_recipient_limit", "1000", 1, 1000000, "maximal recipients per message"),
    T("smtpd_timeout", "300s", 1, DAY, 's', "idle timeout while waiting for a client command or data"),
    I("smtpd_hard_error_limit", "20", 1, 100000, "errors after which the session is closed"),
    I("smtpd_soft_error_limit", "10", 1, 100000, "errors after which replies are delayed"),
    T("smtpd_error_sleep_time", "1s", 0, 300, 's', "delay before an error reply once past the soft limit"),
    I("smtpd_client_connection_limit", "1000", 1, 1000000, "concurrent sessions per smtpd process"),
    I("line_length_limit", "2048", 512, 1000000, "longest text line in DATA; longer lines are split (as Postfix does)"),
    I("smtpd_command_line_limit", "2048", 512, 65536, "longest SMTP command line accepted"),
    S("smtpd_forbid_bare_newline", "normalize", "bare LF/CR in DATA: normalize (to CRLF), reject, or no"),
    L("smtpd_forbid_bare_newline_exclusions", "$mynetworks", "clients exempt from smtpd_forbid_bare_newline=reject"),
    B("smtpd_delay_reject", "yes", "defer client/helo/sender restrictions until RCPT"),
    L("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination", "relay control at RCPT"),
    L("smtpd_recipient_restrictions", "", "restrictions at RCPT after relay control"),
    L("smtpd_sender_restrictions", "", "restrictions at MAIL FROM"),
    L("smtpd_client_restrictions", "", "restrictions on the client"),
    L("smtpd_helo_restrictions", "", "restrictions on HELO/EHLO"),
    B("smtpd_helo_required", "no", "require HELO/EHLO before MAIL"),
    B("smtputf8_enable", "yes", "offer SMTPUTF8 (RFC 6531): UTF-8 addresses with MAIL FROM ... SMTPUTF8"),
    /* TLS (OpenSSL), server side */
    S("smtpd_tls_security_level", "", "server TLS: none, may (offer STARTTLS), encrypt (require it)"),
    S("smtpd_tls_cert_file", "", "PEM server certificate (chain may follow it)"),
    S("smtpd_tls_key_file", "$smtpd_tls_cert_file", "PEM private key of the server certificate"),
    L("smtpd_tls_chain_files", "", "PEM files with key, certificate and chain (instead of cert/key)"),
    B("smtpd_tls_wrappermode", "no", "implicit TLS from the first byte (port 465, master.cf -o)"),
    L("smtpd_tls_protocols", ">=TLSv1.2", "TLS protocols offered by smtpd"),
    L("smtpd_tls_mandatory_protocols", ">=TLSv1.2", "TLS protocols when TLS is mandatory"),
    S("smtpd_tls_ciphers", "medium", "cipher grade: high, medium"),
    L("smtpd_tls_exclude_ciphers", "", "OpenSSL cipher names to exclude"),
    S("smtpd_tls_mandatory_ciphers", "high", "cipher grade when TLS is mandatory (encrypt, wrapper mode, ports 587/465): high, medium"),
    L("smtpd_tls_mandatory_exclude_ciphers", "", "ciphers also excluded when TLS is mandatory"),
    S("tls_high_cipherlist", "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!PSK:@STRENGTH", "OpenSSL cipher list of the high grade (TLS 1.2: forward secrecy and AEAD only)"),
    S("tls_medium_cipherlist", "HIGH:MEDIUM:!aNULL:!eNULL:!MD5:!RC4:!3DES:!IDEA:@STRENGTH", "OpenSSL cipher list of the medium grade"),
    B("smtpd_tls_auth_only", "yes", "offer AUTH only after STARTTLS"),
    B("smtpd_tls_received_header", "no", "add TLS protocol and cipher to Received:"),
    I("smtpd_tls_loglevel", "1", 0, 4, "log TLS handshakes: 0 none, 1 summary"),
    /* TLS, client side (delivery) */
    S("smtp_tls_security_level", "may", "client TLS: none, may, encrypt, verify, secure"),
    S("smtp_tls_CAfile", "", "PEM CA certificates for verify/secure"),
    S("smtp_tls_CApath", "", "directory of CA certificates for verify/secure"),
    L("smtp_tls_policy_maps", "", "hash: table: destination -> security level [match=...]"),
    L("smtp_tls_protocols", "!SSLv2, !SSLv3", "TLS protocols used by the client"),
    L("smtp_tls_mandatory_protocols", ">=TLSv1.2", "TLS protocols at encrypt and above"),
    S("smtp_tls_ciphers", "medium", "client cipher grade for opportunistic TLS: high, medium"),
    S("smtp_tls_mandatory_ciphers", "medium", "client cipher grade at encrypt and above"),
    L("smtp_tls_exclude_ciphers", "", "OpenSSL cipher names the client excludes"),
    L("smtp_tls_mandatory_exclude_ciphers", "", "ciphers also excluded at encrypt and above"),
    S("smtp_tls_cert_file", "", "client certificate (optional)"),
    S("smtp_tls_key_file", "$smtp_tls_cert_file", "client key (optional)"),
    I("smtp_tls_loglevel", "1", 0, 4, "log TLS sessions: 0 none, 1 summary"),
    T("smtp_starttls_timeout", "300s", 1, 3600, 's', "timeout for the TLS handshake"),
    T("smtpd_starttls_timeout", "300s", 1, 3600, 's', "timeout for the server TLS handshake"),
    /* SMTP AUTH (Cyrus SASL) */
    B("smtpd_sasl_auth_enable", "no", "offer SMTP AUTH"),
    S("smtpd_sasl_type", "cyrus", "SASL implementation: cyrus (the only one; anything else is a configuration error)"),
    S("smtpd_sasl_path", "smtpd", "Cyrus SASL application name (smtpd.conf)"),
    S("cyrus_sasl_config_path", "", "directory searched for smtpd.conf (empty: Cyrus default)"),
    L("smtpd_sasl_security_options", "noanonymous", "SASL mechanism restrictions without TLS"),
    L("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", "SASL mechanism restrictions with TLS"),
    S("smtpd_sasl_local_domain", "", "SASL realm"),
    L("smtpd_sender_login_maps", "", "hash: table: sender address -> SASL logins owning it"),
    T("smtpd_sasl_failure_delay", "1s", 0, 60, 's', "delay before answering a failed AUTH"),
    I("smtpd_sasl_max_line", "12288", 512, 1048576, "longest AUTH response line accepted"),
    /* Client limits (anvil) */
    I("smtpd_client_connection_count_limit", "50", 0, 1000000, "concurrent connections per client (0: no limit)"),
    I("smtpd_client_connection_rate_limit", "0", 0, 1000000, "connections per client per anvil_rate_time_unit"),
    I("smtpd_client_message_rate_limit", "0", 0, 1000000, "messages per client per time unit"),
    I("smtpd_client_recipient_rate_limit", "0", 0, 1000000, "recipients per client per time unit"),
    I("smtpd_client_auth_rate_limit", "0", 0, 1000000, "AUTH commands per client per time unit"),
    I("smtpd_client_auth_failure_limit", "10", 0, 1000000, "failed AUTH per client per time unit before refusal"),
    L("smtpd_client_event_limit_exceptions", "$mynetworks", "clients exempt from the per-client limits"),
    T("anvil_rate_time_unit", "60s", 1, 3600, 's', "time window of the per-client rate limits"),
    I("hopcount_limit", "50", 1, 100000, "Received:/Delivered-To: headers a message may carry (more: a mail loop, refused)"),
    I("header_size_limit", "102400", 1024, 10000000, "longest message header accepted"),
    /* Queue lifetimes and retry */
    T("maximal_queue_lifetime", "5d", 0, 365 * DAY, 'd', "time a message may stay queued before it is bounced"),
    T("bounce_queue_lifetime", "5d", 0, 365 * DAY, 'd', "the same for bounces (null sender)"),
    T("minimal_backoff_time", "300s", 1, 365 * DAY, 's', "minimal time between delivery attempts of a deferred message"),
    T("maximal_backoff_time", "4000s", 1, 365 * DAY, 's', "maximal time between delivery attempts"),
    T("queue_run_delay", "300s", 1, DAY, 's', "how often qmgr scans for deferred mail that is due"),
    T("delay_warning_time", "0h", 0, 365 * DAY, 'h', "send a delay warning after this time (0: never)"),
    I("qmgr_message_active_limit", "20000", 1, 10000000, "messages in qmgr's memory at once"),
    I("qmgr_message_recipient_limit", "20000", 1, 10000000, "recipients in qmgr's memory at once"),
    /* Scheduling per destination */
    I("default_destination_concurrency_limit", "20", 1, 10000, "parallel deliveries per destination"),
    I("default_destination_recipient_limit", "50", 1, 100000, "recipients per delivery"),
    I("default_process_concurrency", "100", 1, 100000, "parallel deliveries in total (all destinations)"),
    T("destination_suspend_time", "60s", 1, DAY, 's', "how long a destination that refuses connections is left alone"),
    /* SMTP client (delivery) */
    I("smtp_port", "25", 1, 65535, "TCP port for MX hosts and relayhost without :port"),
    S("dns_servers", "", "DNS servers (ip or ip:port, comma separated); empty: /etc/resolv.conf"),
    T("smtp_connect_timeout", "30s", 1, 3600, 's', "timeout for a TCP connection"),
    T("smtp_helo_timeout", "300s", 1, 3600, 's', "timeout for the greeting and the EHLO reply"),
    T("smtp_mail_timeout", "300s", 1, 3600, 's', "timeout for the MAIL FROM reply"),
    T("smtp_rcpt_timeout", "300s", 1, 3600, 's', "timeout for each RCPT TO reply"),
    T("smtp_data_init_timeout", "120s", 1, 3600, 's', "timeout for the DATA reply"),
    T("smtp_data_xfer_timeout", "180s", 1, 3600, 's', "timeout while sending message content"),
    T("smtp_data_done_timeout", "600s", 1, 7200, 's', "timeout for the reply after the final dot"),
    T("smtp_quit_timeout", "300s", 1, 3600, 's', "timeout for the QUIT reply"),
    T("smtp_rset_timeout", "20s", 1, 3600, 's', "timeout for the RSET reply on a reused connection"),
    I("smtp_mx_address_limit", "5", 0, 1000, "maximal MX host addresses tried per delivery (0: all)"),
    S("smtp_helo_name", "$myhostname", "hostname sent in EHLO/HELO"),
    B("smtp_connection_cache_on_demand", "yes", "keep connections open for more mail to the same destination"),
    T("smtp_connection_cache_time_limit", "2s", 1, 3600, 's', "how long an idle cached connection is kept"),
    I("smtp_connection_reuse_count_limit", "100", 0, 1000000, "messages per connection (0: no limit)"),
    B("smtp_skip_5xx_greeting", "yes", "try the next MX host when one greets with 5xx"),
    B("smtp_chunking_enable", "yes", "send content with BDAT (RFC 3030 CHUNKING) to servers that offer it, else DATA"),
    B("disable_mime_output_conversion", "no", "send 8-bit mail as it is to servers without 8BITMIME (no conversion to 7 bit)"),
    /* bounce */
    I("bounce_size_limit", "50000", 1, 100000000, "maximal original message bytes returned in a bounce"),
    /* misc */
};

const size_t param_count = sizeof(param_table) / sizeof(param_table[0]);
