# postino: one non-recursive build.
#   make            build every program into bin/
#   make run        install what is missing, build, start in the foreground
#   make test       build and run the unit and integration tests
#   make test SANITIZE=1   the same under ASan+UBSan (separate build dir)
#   make bench      side-by-side benchmark against Postfix
#   make bench-modes  the same at shipped defaults, a table of load shapes
#   make bench-dataparse  micro-benchmark of smtpd's content parser
#   make bench-bdat the delivery agent sending BDAT vs DATA (smtp_chunking_enable)
#   make bench-suppress  suppression list lookups at 10^5..10^7 entries
#   make bench-dkim DKIM signing cost, postino vs Postfix + OpenDKIM (part of bench)
#   make deps       apt-get what is missing (idempotent)
#   make format     apply .clang-format to the tree (format-check: only check)
#   make install    FHS install [PREFIX=/usr/local] [DESTDIR=]; make man: the man pages
#   make deb        the Debian package in build/deb (dpkg-buildpackage + lintian)

CC      ?= cc
SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD   := build/asan
BIN     := build/asan/bin
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
HARDEN  :=
else
BUILD   := build/rel
BIN     := bin
SANFLAGS :=
HARDEN  := -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE
endif

WARN    := -std=c11 -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Wvla -Wno-unused-parameter
CFLAGS  ?= -O2 -g
ALL_CFLAGS := $(CFLAGS) $(WARN) $(HARDEN) $(SANFLAGS) -D_GNU_SOURCE -I. -MMD -MP
LDFLAGS_ALL := $(LDFLAGS) $(SANFLAGS) $(if $(SANFLAGS),,-pie -Wl,-z,relro -Wl,-z,now)
# What each program links, and nothing more: master runs as root and carries
# no SASL, c-ares, Berkeley DB or OpenSSL.
EV_LIBS     := -levent
master_LIBS := $(EV_LIBS)
anvil_LIBS  := $(EV_LIBS)
feedback_LIBS := $(EV_LIBS)
bounce_LIBS := $(EV_LIBS)
qmgr_LIBS   := $(EV_LIBS) -ldb -lcares -lidn2 -lhiredis # hiredis: shaping_shared_state
smtpd_LIBS  := -levent_openssl $(EV_LIBS) -lssl -lcrypto -ldb -lsasl2 -lcares -lidn2
delivery_LIBS := -levent_openssl $(EV_LIBS) -lssl -lcrypto -ldb -lcares -lidn2
cli_LIBS    := $(EV_LIBS) -ldb -lcrypto
# Unit tests and benchmarks may touch any layer of common/.
LIBS        := -levent_openssl $(EV_LIBS) -lssl -lcrypto -ldb -lsasl2 -lcares -lidn2 -lhiredis

# common/ is three layers, each a static library (see common/README):
#   util  plain utility: memory, buffers, logging, records, sockets, workers
#   mail  mail-system knowledge: configuration, queue files, addresses, DSN
#   glue  wrappers of outside libraries: TLS, SASL, DNS, Berkeley DB tables
LAYERS := util mail glue
define layer_rule
$(1)_LSRC := $$(sort $$(wildcard common/$(1)/*.c))
$(1)_LOBJ := $$($(1)_LSRC:%.c=$$(BUILD)/%.o)
LIB_$(1) := $$(BUILD)/common/lib$(1).a
$$(LIB_$(1)): $$($(1)_LOBJ)
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
endef
$(foreach l,$(LAYERS),$(eval $(call layer_rule,$(l))))
COMMON_SRC := $(foreach l,$(LAYERS),$($(l)_LSRC))
# Link order: a layer may use the ones after it.
COMMON_LIBS := $(LIB_glue) $(LIB_mail) $(LIB_util)

# Each program: a directory with <prog>.c (main) + <prog>_*.c. The parts
# other than main form lib<prog>.a, which the program and its unit tests
# (tests/unit/<prog>/) link.
PROGS := master smtpd qmgr delivery bounce anvil cli feedback
# the final delivery agents (common/mail/lagent.c is their skeleton)
PROGS += virtual error discard local pipe
virtual_LIBS := $(EV_LIBS) -ldb
error_LIBS := $(EV_LIBS) -ldb
discard_LIBS := $(EV_LIBS) -ldb
local_LIBS := $(EV_LIBS) -ldb
pipe_LIBS := $(EV_LIBS) -ldb
# the metrics service (issue #11): Prometheus endpoint on evhttp (in -levent)
PROGS += metrics
metrics_LIBS := $(EV_LIBS) -lm
# the event logging daemon (issue #11): JSON lines, webhook over evhttp
PROGS += events
events_LIBS := $(EV_LIBS)
define prog_rule
$(1)_MAIN := $(1)/$(if $(filter cli,$(1)),postino,$(1)).c
$(1)_SRC := $$(sort $$(wildcard $(1)/*.c))
$(1)_PSRC := $$(filter-out $$($(1)_MAIN),$$($(1)_SRC))
$(1)_POBJ := $$($(1)_PSRC:%.c=$$(BUILD)/%.o)
LIB_PROG_$(1) := $$(BUILD)/$(1)/lib$(1).a
$$(LIB_PROG_$(1)): $$($(1)_POBJ)
	@mkdir -p $$(dir $$@)
	rm -f $$@ && ar rcs $$@ $$^
$$(BIN)/$(if $(filter cli,$(1)),postino,$(1)): $$(BUILD)/$$($(1)_MAIN:%.c=%.o) $$(LIB_PROG_$(1)) $$(COMMON_LIBS) | $$(BIN)
	$$(CC) $$(LDFLAGS_ALL) -o $$@ $$(BUILD)/$$($(1)_MAIN:%.c=%.o) $$(LIB_PROG_$(1)) $$(COMMON_LIBS) $$($(1)_LIBS)
endef
$(foreach p,$(PROGS),$(eval $(call prog_rule,$(p))))

DAEMONS := $(filter-out cli,$(PROGS))
PROG_BINS := $(addprefix $(BIN)/,$(DAEMONS) postino)

# Unit tests (cmocka): tests/unit/test_<module>.c for common/, and
# tests/unit/<prog>/test_<part>.c for a program's parts, linked against
# lib<prog>.a. A test may name more libraries below.
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c tests/unit/*/test_*.c))
UNIT_BINS := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(COMMON_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(COMMON_LIBS) $(LIBS) -lcmocka
define unit_prog_rule
$$(BUILD)/tests/$(1)/%: $$(BUILD)/tests/unit/$(1)/%.o $$(LIB_PROG_$(1)) $$(COMMON_LIBS)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS_ALL) -o $$@ $$(filter %.o %.a,$$^) $$(COMMON_LIBS) $$(LIBS) -lcmocka
endef
$(foreach p,$(PROGS),$(eval $(call unit_prog_rule,$(p))))
# anvil's test also drives smtpd's anvil client against the real table
$(BUILD)/tests/anvil/test_anvil: $(LIB_PROG_smtpd)
# test_params reads the program sources to see which parameters are used
$(BUILD)/tests/unit/test_params.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
# test_bclass checks the shipped conf/bounce_classifier_rules
$(BUILD)/tests/unit/test_bclass.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
# test_shaperules checks the shipped conf/shaping_rules
$(BUILD)/tests/unit/test_shaperules.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
# the feedback tests read samples from tests/data/feedback, rules from conf/
$(BUILD)/tests/unit/feedback/test_parse.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
$(BUILD)/tests/unit/feedback/test_event.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'

.DEFAULT_GOAL := all
.PHONY: all run test unit integration bench bench-modes bench-dataparse bench-bdat bench-suppress bench-dkim deps clean fuzz install format format-check
.PHONY: man deb soak soak-ci
.PHONY: scale
all: $(PROG_BINS)

# sendmail and newaliases are the postino binary under those names (issue #11:
# local submission, cli/cli_sendmail.c)
SENDMAIL_LINKS := $(BIN)/sendmail $(BIN)/newaliases
$(SENDMAIL_LINKS): $(BIN)/postino
	ln -sf postino $@
all: $(SENDMAIL_LINKS)

$(BIN):
	mkdir -p $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# Debian packages needed to build, run and test. Idempotent: apt-get only
# runs when something is missing.
DEB_PKGS := build-essential pkg-config libssl-dev libdb5.3-dev libsasl2-dev libidn2-dev \
            libsasl2-modules sasl2-bin libevent-dev libc-ares-dev libcmocka-dev \
            python3-pytest python3-aiosmtpd python3-dkim swaks dnsmasq-base \
            postfix pflogsumm openssl clang libclang-rt-14-dev nmap \
            libnet-ssleay-perl testssl.sh clang-format \
            python3-dnspython python3-nacl opendkim-tools
# bench-dkim: Postfix signing through the OpenDKIM milter
DEB_PKGS += opendkim
# test_lmtp.py: a private Dovecot (LMTP in, IMAP out) started by the test
DEB_PKGS += dovecot-core dovecot-lmtpd dovecot-imapd
# shaping_shared_state (issue #9): qmgr's Redis client, the server its tests start
DEB_PKGS += libhiredis-dev redis-server
# packaging (issue #11): make deb and test_package.py (lintian, the unit's
# systemd-analyze verify, logrotate -d, groff/man for the man pages)
DEB_PKGS += devscripts debhelper lintian systemd logrotate groff-base man-db
# test_metrics.py: the Prometheus text parser, and a real Prometheus that scrapes
DEB_PKGS += python3-prometheus-client prometheus
# make soak: the memory/descriptor plot
DEB_PKGS += python3-matplotlib
# test_events.py: every event line checked against docs/events.schema.json
DEB_PKGS += python3-jsonschema
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing$$missing"; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@if [ "$$(id -u)" = 0 ] && ! getent passwd postino >/dev/null; then \
	  echo "deps: creating system user postino"; \
	  useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postino; \
	fi

run: deps
	$(MAKE) all
	$(BIN)/postino -c conf newaliases
	$(BIN)/postino -c conf start-fg

PYTEST := /usr/bin/python3 -m pytest

unit: $(UNIT_BINS)
	@fail=0; for t in $(UNIT_BINS); do $$t || fail=1; done; exit $$fail

# Under SANITIZE=1 the daemons' reports land in each test's maillog, which
# the harness scans; leak checks stay with the unit tests (daemons are
# stopped by signals in the middle of their work).
integration: all
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	POSTINO_BIN=$(abspath $(BIN)) $(PYTEST) -q tests/integration $(PYTEST_ARGS)

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) soak-ci

# Soak (issue #12): mixed load for SOAK_SECONDS with a random daemon killed
# (SIGKILL) every minute and a reload every five; checks that nothing
# acknowledged is lost, no file is left in the spool, memory and descriptors
# stay flat; writes soak.txt, soak.json and soak.png into SOAK_OUT.
SOAK_SECONDS ?= 3600
SOAK_OUT ?= soak-out
soak: all
	POSTINO_BIN=$(abspath $(BIN)) /usr/bin/python3 tests/soak/soak.py \
	  --seconds $(SOAK_SECONDS) --out $(SOAK_OUT) $(SOAK_ARGS)
# The 3-minute version CI runs (a kill every 20 s, a reload every minute).
soak-ci: all
	POSTINO_BIN=$(abspath $(BIN)) /usr/bin/python3 tests/soak/soak.py \
	  --seconds 180 --kill-every 20 --reload-every 60 --sample-every 10 \
	  --out $(SOAK_OUT) $(SOAK_ARGS)

# Scale (issue #12, not in CI): SCALE_MESSAGES deferred messages across
# SCALE_DOMAINS domains; times queue stats/summary/list -d, qmgr RSS, clean
# restart, rebuild after kill -9, hold/delete by domain and the delivery
# rate once the receiver listens; writes scale-N.txt/json into SCALE_OUT.
SCALE_MESSAGES ?= 1000000
SCALE_DOMAINS ?= 10000
SCALE_OUT ?= scale-out
scale: all
	POSTINO_BIN=$(abspath $(BIN)) /usr/bin/python3 tests/scale/scale.py \
	  --messages $(SCALE_MESSAGES) --domains $(SCALE_DOMAINS) --out $(SCALE_OUT) $(SCALE_ARGS)

bench: deps
	$(MAKE) all
	/usr/bin/python3 bench/bench.py --bin $(abspath $(BIN)) $(BENCH_ARGS)
	$(MAKE) bench-dkim

# Issue #12's mode table: both MTAs at shipped defaults, client connection
# reuse on/off, 4 KB/100 KB, 1/50 recipients (medians, ratio), and
# bench/floor_mta, what any MTA could reach on this machine. E.g.
# BENCH_MODES_ARGS="--modes all --rounds 5" or "--bin-b /old/bin" (A/B).
bench-modes: deps
	$(MAKE) all build/rel/bench/floor_mta
	/usr/bin/python3 bench/bench.py --bin $(abspath $(BIN)) --floor --modes $(BENCH_MODES_ARGS)

# DKIM signing (RSA-2048) in postino vs Postfix + OpenDKIM milter, and each
# against its unsigned self (medians; see bench/dkim_bench.py)
bench-dkim: deps
	$(MAKE) all
	/usr/bin/python3 bench/dkim_bench.py --bin $(abspath $(BIN)) $(DKIM_BENCH_ARGS)

# BDAT vs DATA from postino's delivery agent to a second postino (medians;
# BENCH_ARGS="--receiver postfix" for Postfix's smtpd; see bench/bdat_bench.py)
bench-bdat: deps
	$(MAKE) all
	/usr/bin/python3 bench/bdat_bench.py --bin $(abspath $(BIN)) $(BENCH_ARGS)

# Micro-benchmark of smtpd's DATA/BDAT content parser (MB/s, asserts nothing)
bench-dataparse: $(BUILD)/bench/dataparse_bench
	$(BUILD)/bench/dataparse_bench
$(BUILD)/bench/dataparse_bench: $(BUILD)/bench/dataparse_bench.o $(LIB_PROG_smtpd) $(COMMON_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(COMMON_LIBS) $(LIBS)

# bench.py --floor: the least any MTA with fsync-before-250 can cost here
# (bench/floor_mta.c; a measuring instrument, never a mail server)
$(BUILD)/bench/floor_mta: bench/floor_mta.c
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(ALL_CFLAGS)) $(LDFLAGS_ALL) -pthread -o $@ $<

# Lookups in the suppression list at 10^5, 10^6 and 10^7 entries: prints
# the time per lookup and asserts nothing (BENCH_ARGS="DIR N..." for another
# place or other sizes)
bench-suppress: $(BUILD)/bench/suppress_bench
	$(BUILD)/bench/suppress_bench $(BENCH_ARGS)
$(BUILD)/bench/suppress_bench: $(BUILD)/bench/suppress_bench.o $(COMMON_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(COMMON_LIBS) $(LIBS)

# make install [PREFIX=/usr/local] [DESTDIR=...]: FHS paths (see README,
# "Installing"). The CLI into sbin, the daemons into lib/postino (with the
# mailq, sendmail and newaliases entry points: links to the CLI), man pages, the systemd unit
# and the logrotate file; /etc/postino's files only when they do not exist
# yet (never overwritten), daemon_directory pointing at the installed
# daemons; the spool directory (master fixes what is inside at start). For
# real (no DESTDIR) and as root it also creates the postino user and group.
# MTA_LINKS=yes (default) links $(SBINDIR)/sendmail and $(BINDIR)/mailq to
# ours; the Debian package says no and uses update-alternatives instead.
PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
BINDIR  ?= $(PREFIX)/bin
DAEMONDIR ?= $(PREFIX)/lib/postino
MANDIR  ?= $(PREFIX)/share/man
CONFDIR ?= /etc/postino
SPOOLDIR ?= /var/spool/postino
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/lib/systemd/system,$(PREFIX)/lib/systemd/system)
LOGROTATEDIR ?= /etc/logrotate.d
MTA_LINKS ?= yes
MAN_PAGES := conf/man/postino.1 conf/man/master.cf.5 $(BUILD)/man/main.cf.5
# sendmail(1): the sendmail entry point (cli/cli_sendmail.c)
SENDMAIL_MAN := conf/man/sendmail.1
CONF_SED := sed -e 's|@DAEMONDIR@|$(DAEMONDIR)|g' -e 's|@SPOOLDIR@|$(SPOOLDIR)|g' \
                -e 's|@CONFDIR@|$(CONFDIR)|g' -e 's|@SBINDIR@|$(SBINDIR)|g'

# main.cf(5) is generated from the parameter table (common/mail/params.c)
$(BUILD)/man/mkman_maincf: $(BUILD)/conf/man/mkman_maincf.o $(COMMON_LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o,$^) $(LIB_mail) $(LIB_util)
$(BUILD)/man/main.cf.5: conf/man/main.cf.5.in $(BUILD)/man/mkman_maincf
	cat conf/man/main.cf.5.in > $@.tmp && $(BUILD)/man/mkman_maincf >> $@.tmp && mv $@.tmp $@
man: $(MAN_PAGES)

install: all man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(DAEMONDIR) \
	  $(DESTDIR)$(CONFDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LOGROTATEDIR)
	install -m 755 $(BIN)/postino $(DESTDIR)$(SBINDIR)/postino
	for p in $(DAEMONS); do install -m 755 $(BIN)/$$p $(DESTDIR)$(DAEMONDIR)/$$p; done
	for e in mailq sendmail newaliases; do ln -sf $(SBINDIR)/postino $(DESTDIR)$(DAEMONDIR)/$$e; done
	install -m 644 conf/man/postino.1 $(DESTDIR)$(MANDIR)/man1/postino.1
	install -m 644 conf/man/master.cf.5 $(DESTDIR)$(MANDIR)/man5/master.cf.5
	install -m 644 $(BUILD)/man/main.cf.5 $(DESTDIR)$(MANDIR)/man5/main.cf.5
	install -m 644 $(SENDMAIL_MAN) $(DESTDIR)$(MANDIR)/man1/sendmail.postino.1
	if [ "$(MTA_LINKS)" = yes ]; then \
	  install -d $(DESTDIR)$(BINDIR); \
	  ln -sf $(DAEMONDIR)/mailq $(DESTDIR)$(BINDIR)/mailq; \
	  ln -sf $(DAEMONDIR)/sendmail $(DESTDIR)$(SBINDIR)/sendmail; \
	  ln -sf $(DAEMONDIR)/newaliases $(DESTDIR)$(BINDIR)/newaliases; \
	  ln -sf sendmail.postino.1 $(DESTDIR)$(MANDIR)/man1/sendmail.1; fi
	$(CONF_SED) conf/dist/postino.service > $(DESTDIR)$(UNITDIR)/postino.service
	chmod 644 $(DESTDIR)$(UNITDIR)/postino.service
	install -m 644 conf/dist/postino.logrotate $(DESTDIR)$(LOGROTATEDIR)/postino
	@if [ ! -e $(DESTDIR)$(CONFDIR)/main.cf ]; then \
	  $(CONF_SED) conf/dist/main.cf > $(DESTDIR)$(CONFDIR)/main.cf; \
	  chmod 644 $(DESTDIR)$(CONFDIR)/main.cf; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/main.cf"; fi
	@for f in master.cf:dist/master.cf aliases:aliases \
	    bounce_classifier_rules:bounce_classifier_rules shaping_rules:shaping_rules; do \
	  dst=$${f%%:*}; src=conf/$${f#*:}; \
	  if [ ! -e $(DESTDIR)$(CONFDIR)/$$dst ]; then \
	    install -m 644 $$src $(DESTDIR)$(CONFDIR)/$$dst; \
	    echo "install: wrote $(DESTDIR)$(CONFDIR)/$$dst"; fi; done
	install -d -m 755 $(DESTDIR)$(SPOOLDIR)
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then \
	  getent group postino >/dev/null || groupadd --system postino; \
	  getent passwd postino >/dev/null || useradd --system --gid postino \
	    --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin postino; \
	  $(DESTDIR)$(SBINDIR)/postino -c $(CONFDIR) newaliases; \
	fi

# make deb: a Debian package (build/deb/postino_VERSION_ARCH.deb) built by
# dpkg-buildpackage from a copy of the tree, so its clean step never
# touches this checkout's bin/ and build/.
DEB_VERSION = $(shell dpkg-parsechangelog -l debian/changelog -S Version 2>/dev/null)
deb:
	rm -rf build/deb && mkdir -p build/deb/postino-$(DEB_VERSION)
	git ls-files -z --cached --others --exclude-standard | \
	  grep -zv '^build/\|^bin/' | xargs -0 tar cf - | tar xf - -C build/deb/postino-$(DEB_VERSION)
	cd build/deb/postino-$(DEB_VERSION) && dpkg-buildpackage -b -us -uc
	lintian --fail-on error build/deb/postino_$(DEB_VERSION)_*.deb

clean:
	rm -rf build bin

# One frozen style (.clang-format, clang-format 14 from Debian's clang).
# `make format` rewrites the tree; `make format-check` only says what differs.
FORMAT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_SRC)
format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRC) && echo "format: clean"

# libFuzzer harnesses (make fuzz, make fuzz-smoke)
-include fuzz/fuzz.mk

# (build/deb holds make deb's copy of the tree, with its own build)
-include $(shell find build -path build/deb -prune -o -name '*.d' -print 2>/dev/null)
