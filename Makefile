# postino: one non-recursive build.
#   make            build every program into bin/
#   make run        install what is missing, build, start in the foreground
#   make test       build and run the unit and integration tests
#   make test SANITIZE=1   the same under ASan+UBSan (separate build dir)
#   make bench      side-by-side benchmark against Postfix
#   make bench-dataparse  micro-benchmark of smtpd's content parser
#   make bench-bdat the delivery agent sending BDAT vs DATA (smtp_chunking_enable)
#   make bench-suppress  suppression list lookups at 10^5..10^7 entries
#   make bench-dkim DKIM signing cost, postino vs Postfix + OpenDKIM (part of bench)
#   make deps       apt-get what is missing (idempotent)
#   make format     apply .clang-format to the tree (format-check: only check)

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
$(BUILD)/tests/unit/qmgr/test_shaperules.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
# the feedback tests read samples from tests/data/feedback, rules from conf/
$(BUILD)/tests/unit/feedback/test_parse.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'
$(BUILD)/tests/unit/feedback/test_event.o: ALL_CFLAGS += -DPOSTINO_SRCDIR='"$(CURDIR)"'

.DEFAULT_GOAL := all
.PHONY: all run test unit integration bench bench-dataparse bench-bdat bench-suppress bench-dkim deps clean fuzz install format format-check
all: $(PROG_BINS)

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

bench: deps
	$(MAKE) all
	/usr/bin/python3 bench/bench.py --bin $(abspath $(BIN)) $(BENCH_ARGS)
	$(MAKE) bench-dkim

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

# Lookups in the suppression list at 10^5, 10^6 and 10^7 entries (asserts
# nothing; BENCH_ARGS="DIR N..." for another place or other sizes)
bench-suppress: $(BUILD)/bench/suppress_bench
	$(BUILD)/bench/suppress_bench $(BENCH_ARGS)
$(BUILD)/bench/suppress_bench: $(BUILD)/bench/suppress_bench.o $(COMMON_LIBS)
	$(CC) $(LDFLAGS_ALL) -o $@ $(filter %.o %.a,$^) $(COMMON_LIBS) $(LIBS)

# make install [PREFIX=/usr/local] [DESTDIR=...]: the CLI into sbin (and
# mailq into bin), the daemons into libexec/postino, /etc/postino/main.cf and
# master.cf, bounce_classifier_rules and shaping_rules when they do not exist yet (never
# overwritten), the spool
# directory. Needs the postino user (make deps creates it).
PREFIX  ?= /usr/local
SBINDIR := $(PREFIX)/sbin
LIBEXECDIR := $(PREFIX)/libexec/postino
CONFDIR ?= /etc/postino
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(CONFDIR)
	install -m 755 $(BIN)/postino $(DESTDIR)$(SBINDIR)/postino
	ln -sf $(SBINDIR)/postino $(DESTDIR)$(PREFIX)/bin/mailq
	for p in $(DAEMONS); do install -m 755 $(BIN)/$$p $(DESTDIR)$(LIBEXECDIR)/$$p; done
	@if [ ! -e $(DESTDIR)$(CONFDIR)/main.cf ]; then \
	  sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|' conf/dist/main.cf > $(DESTDIR)$(CONFDIR)/main.cf; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/main.cf"; fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/master.cf ]; then \
	  install -m 644 conf/dist/master.cf $(DESTDIR)$(CONFDIR)/master.cf; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/master.cf"; fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/aliases ]; then \
	  install -m 644 conf/aliases $(DESTDIR)$(CONFDIR)/aliases; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/aliases (run postino newaliases)"; fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/bounce_classifier_rules ]; then \
	  install -m 644 conf/bounce_classifier_rules $(DESTDIR)$(CONFDIR)/bounce_classifier_rules; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/bounce_classifier_rules"; fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/shaping_rules ]; then \
	  install -m 644 conf/shaping_rules $(DESTDIR)$(CONFDIR)/shaping_rules; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/shaping_rules"; fi
	@if [ ! -e $(DESTDIR)$(CONFDIR)/aliases ]; then \
	  install -m 644 conf/aliases $(DESTDIR)$(CONFDIR)/aliases; \
	  echo "install: wrote $(DESTDIR)$(CONFDIR)/aliases (run postino newaliases)"; fi
	install -d -m 755 $(DESTDIR)/var/spool/postino

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

-include $(shell find build -name '*.d' 2>/dev/null)
