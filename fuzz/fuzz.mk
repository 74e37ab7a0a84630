# fuzz/fuzz.mk - libFuzzer harnesses for postino's parsers (issue #3).
#
#   make fuzz-build          build every harness into build/fuzz/bin/
#   make fuzz                run each harness for $(FUZZ_TIME) s (default 60)
#   make fuzz-smoke          run each for 15 s (CI)
#   make fuzz-<name>         run one harness (e.g. make fuzz-addr FUZZ_TIME=300)
#
# Harnesses (fuzz/fuzz_<name>.c, seeds in fuzz/corpus/<name>/):
#   addr       addr_parse_path (all allow_null/allow_bare), addr_next_param,
#              addr_split, addr_domain_valid, xtext decode/encode round trip
#   attr       attr_decode over consecutive records; encode/decode round trip
#   conf       main.cf via conf_load_text, conf_parse_time/bool, master.cf
#   reply      the SMTP client's reply parser (delivery/delivery_reply.c), fed in chunks
#   smtpd_cmd  smtpd's command parser, smtpd/smtpd_cmdparse.c: line checks, verb
#              split, MAIL FROM / RCPT TO with their ESMTP parameters (SIZE,
#              BODY, RET, ENVID, AUTH, SMTPUTF8, NOTIFY, ORCPT) and the error
#              replies; accepted addresses are strict UTF-8, ASCII without SMTPUTF8
#   qfile      qfile_read on arbitrary queue file contents in a temp spool
#   mime7      the 8-bit to 7-bit MIME converter: whole vs chunked scan and
#              conversion give the same result; converted output is 7 bit
#   smtpd_data smtpd's DATA/BDAT content parser (smtpd/smtpd_dataparse.c),
#              fed whole, byte by byte and in 1..7-byte pieces: the outcomes
#              must be identical (end of data, content, every verdict)
#   dotstuff   the delivery agent's DATA encoder: whole vs chunked, no lenient
#              end of data in the output, unstuffs to the normalised input,
#              which is what its BDAT encoder (common/mail/crlf.c) gives
#   sasl_b64   the strict base64 of SMTP AUTH (common/glue/sasl_b64.c): accepted
#              exactly when RFC 4648 text, exact output length, round trips
#   cidr       network lists (smtpd/smtpd_cidr.c): line 1 a client address, the
#              rest a mynetworks value; match/validate agree with each element
#   dict       the table-file loader (common/glue/dict.c, "postino map build")
#              into a temp Berkeley DB, checked against a model of the
#              source syntax: every accepted key is found with its value,
#              a bad line fails the build naming that line
#   feedback   the feedback consumer's bounce/ARF report parser
#              (feedback/feedback_parse.c): fields terminated and bounded,
#              LF and CRLF versions of an input give the same report
#   dkim       the DKIM signer (common/glue/dkim.c): the stored content fed
#              whole, byte by byte and in 1..7-byte pieces gives the same
#              signature; canonical bodies keep RFC 6376's rules
#
# Everything is compiled with clang (-fsanitize=fuzzer,address,undefined,
# UB aborts) into build/fuzz/; the gcc objects are never reused. Runs copy
# the committed seeds into build/fuzz/corpus/<name> so new inputs never land
# in the tree. A crash, leak, UB report or timeout makes the target fail and
# the input is saved as fuzz/crashes/<name>-crash-<sha1> (keep fuzz/crashes/
# out of git). Reproduce with: build/fuzz/bin/fuzz_<name> fuzz/crashes/<file>

FUZZ_CC    ?= clang
FUZZ_TIME  ?= 60
FUZZ_DIR   := build/fuzz
FUZZ_BIN   := $(FUZZ_DIR)/bin
FUZZ_NAMES := addr attr conf reply smtpd_cmd qfile mime7 smtpd_data dotstuff \
              sasl_b64 cidr dict feedback dkim
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
              -fno-omit-frame-pointer
# Others' code: the project's warnings, but a clang-only warning in a file
# owned by someone else must not break the fuzz build.
FUZZ_LIBFLAGS := -O1 -g $(filter-out -Werror,$(WARN)) $(FUZZ_SAN) \
                 -fsanitize=fuzzer-no-link -D_GNU_SOURCE -I. -MMD -MP
FUZZ_HFLAGS   := -O1 -g $(WARN) $(FUZZ_SAN) -fsanitize=fuzzer-no-link \
                 -D_GNU_SOURCE -I. -MMD -MP
FUZZ_LDFLAGS  := $(FUZZ_SAN) -fsanitize=fuzzer
FUZZ_RUNFLAGS := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

FUZZ_COMMON_OBJ := $(COMMON_SRC:%.c=$(FUZZ_DIR)/%.o)
FUZZ_LIB := $(FUZZ_DIR)/libcommon_fuzz.a

.PHONY: fuzz fuzz-smoke fuzz-build $(FUZZ_NAMES:%=fuzz-%)

# common/ and the programs' parts (the fuzz/ rule below is more specific)
$(FUZZ_DIR)/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_LIBFLAGS) -c -o $@ $<

$(FUZZ_DIR)/fuzz/%.o: fuzz/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_HFLAGS) -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_COMMON_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BIN)/fuzz_%: $(FUZZ_DIR)/fuzz/fuzz_%.o $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $(filter %.o,$^) $(FUZZ_LIB) $(LIBS)

.SECONDARY: $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz/fuzz_%.o)

# Harnesses of a program's own part link that part too.
$(FUZZ_BIN)/fuzz_smtpd_data: $(FUZZ_DIR)/smtpd/smtpd_dataparse.o
$(FUZZ_BIN)/fuzz_smtpd_cmd: $(FUZZ_DIR)/smtpd/smtpd_cmdparse.o
$(FUZZ_BIN)/fuzz_cidr: $(FUZZ_DIR)/smtpd/smtpd_cidr.o
$(FUZZ_BIN)/fuzz_reply: $(FUZZ_DIR)/delivery/delivery_reply.o
$(FUZZ_BIN)/fuzz_dotstuff: $(FUZZ_DIR)/delivery/delivery_dotstuff.o
$(FUZZ_BIN)/fuzz_feedback: $(FUZZ_DIR)/feedback/feedback_parse.o $(FUZZ_DIR)/feedback/feedback_mime.o \
                           $(FUZZ_DIR)/feedback/feedback_text.o

fuzz-build: $(FUZZ_NAMES:%=$(FUZZ_BIN)/fuzz_%)

# One harness: fresh copy of the seeds, run, fail on any finding.
$(FUZZ_NAMES:%=fuzz-%): fuzz-%: $(FUZZ_BIN)/fuzz_%
	@mkdir -p $(FUZZ_DIR)/corpus/$* fuzz/crashes
	@cp -n fuzz/corpus/$*/* $(FUZZ_DIR)/corpus/$*/ 2>/dev/null || true
	@echo "==== fuzz: $* for $(FUZZ_TIME)s (log: $(FUZZ_DIR)/fuzz_$*.log)"
	@$(FUZZ_BIN)/fuzz_$* $(FUZZ_RUNFLAGS) -max_total_time=$(FUZZ_TIME) \
	    -artifact_prefix=fuzz/crashes/$*- $(FUZZ_DIR)/corpus/$* \
	    > $(FUZZ_DIR)/fuzz_$*.log 2>&1 \
	  || { tail -n 60 $(FUZZ_DIR)/fuzz_$*.log; echo "==== fuzz: $* FAILED (input saved under fuzz/crashes/)"; exit 1; }
	@grep -E '^(Done|stat::number_of_executed_units)' $(FUZZ_DIR)/fuzz_$*.log || true
	@echo "==== fuzz: $* ok"

fuzz: fuzz-build
	@fail=0; for n in $(FUZZ_NAMES); do $(MAKE) --no-print-directory fuzz-$$n FUZZ_TIME=$(FUZZ_TIME) || fail=1; done; exit $$fail

fuzz-smoke: fuzz-build
	@fail=0; for n in $(FUZZ_NAMES); do $(MAKE) --no-print-directory fuzz-$$n FUZZ_TIME=15 || fail=1; done; exit $$fail
