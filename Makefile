# lora — build, test and install. `make help` lists the targets.

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
DESTDIR  ?=

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN     := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wvla -Wstrict-prototypes \
            -Wmissing-prototypes -Wformat=2
PKGS     := zlib yaml-0.1 openblas lapacke libcjson libpcre2-8 libutf8proc
VERSION  := 0.1.0

# MPI=0: a build without Open MPI (lora-train runs as one process), in its
# own directory.
MPI      ?= 1
ifeq ($(MPI),0)
BUILD    ?= build-nompi
endif

# The sanitizer build lives in its own directory so the two never mix.
ifeq ($(SANITIZE),1)
BUILD    ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
BUILD    ?= build
SANFLAGS :=
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

# pkg-config is only consulted when building, so `make deps` and `make help`
# work on a machine that has none of the libraries yet.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = $(WARN) $(CFLAGS) $(SANFLAGS) -fopenmp -Ilib -Icmd $(PKG_CFLAGS) $(MPI_CFLAGS) -DLORA_VERSION='"$(VERSION)"'
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS) -fopenmp
# oneDNN ships no pkg-config file.
LIBS       = $(PKG_LIBS) -ldnnl -lm $(MPI_LIBS)
# Open MPI for lora-train's data-parallel runs (MPI=0: none, see below);
# only the programs that call it (lora-train) record a need for libmpi.
ifeq ($(MPI),1)
MPI_CFLAGS = -DLORA_MPI $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   = -Wl,--as-needed $(shell pkg-config --libs ompi-c 2>/dev/null) -Wl,--no-as-needed
endif

LIB_SRC  := $(wildcard lib/*/*.c)
HDRS     := $(wildcard lib/*/*.h cmd/*.h)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CMD_SRC  := $(wildcard cmd/lora-*.c)
BINS     := $(CMD_SRC:cmd/%.c=$(BUILD)/bin/%)
TEST_SRC := $(wildcard tests/unit/*.c tests/tools/*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Fuzz harnesses, also built without libFuzzer (with tests/fuzz/driver.c)
# so that the suite replays their corpora and regression inputs.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_BIN += $(FUZZ_REPLAY)
MANS     := $(wildcard man/*.1 man/*.5 man/*.7)

# Debian packages the build and the suite need.
DEB_PKGS := gcc make pkg-config zlib1g-dev libyaml-dev libopenblas-dev liblapacke-dev libdnnl-dev \
            libcjson-dev libpcre2-dev libutf8proc-dev bats bats-support bats-assert bats-file jq man-db strace
# ...and those of `make fuzz` (clang's libFuzzer runtime, its OpenMP) and of
# `make check VALGRIND=1`, only when asked for.
ifneq ($(filter fuzz,$(MAKECMDGOALS)),)
DEB_PKGS += clang libclang-rt-14-dev libomp-dev
endif
ifeq ($(VALGRIND),1)
DEB_PKGS += valgrind
endif
# lora-train's data-parallel runs (lora-train(1), MPI): Open MPI, linked into
# lora-train alone. MPI=0 builds without it, for machines with no MPI runtime:
# lora-train then runs as one process and refuses to start under a launcher.
ifeq ($(MPI),1)
DEB_PKGS += openmpi-bin libopenmpi-dev
endif

.PHONY: all check fuzz bench demo install uninstall clean deps help
# Keep object files of binaries and tests between runs.
.SECONDARY:

all: deps-ok $(BINS) $(TEST_BIN) ## build every binary into $(BUILD)/bin

$(BUILD)/%.o: %.c $(HDRS) Makefile | deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/liblora.a: $(LIB_OBJ)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/cmd/%.o $(BUILD)/cmd/cli.o $(BUILD)/liblora.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(BUILD)/cmd/cli.o $(BUILD)/liblora.a
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/driver.o $(BUILD)/liblora.a
	@mkdir -p $(dir $@)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

$(FUZZ_SRC:%.c=$(BUILD)/%.o) $(BUILD)/tests/fuzz/driver.o: $(wildcard tests/fuzz/*.h)

check: all ## run the whole bats suite (SANITIZE=1: under ASan+UBSan; VALGRIND=1: under valgrind)
	$(Q)LORA_BUILD=$(abspath $(BUILD)) LORA_SANITIZE=$(SANITIZE) LORA_VALGRIND=$(VALGRIND) tests/run

# libFuzzer builds: clang, coverage-guided, ASan+UBSan, in their own tree.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_CC      ?= clang
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS   = $(WARN) -Wno-unknown-pragmas -Wno-pass-failed -g -O1 $(FUZZ_SAN) -fopenmp -Ilib -Icmd $(PKG_CFLAGS) -DLORA_VERSION='"$(VERSION)"'
FUZZ_BINS    := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_BUILD)/bin/%)

fuzz: deps-ok $(FUZZ_BINS) ## fuzz every reader for FUZZ_SECONDS (default 60) each; finds go to tests/fuzz/regress/
	$(Q)FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_WORK=$(abspath $(FUZZ_BUILD))/corpus tests/fuzz/run $(FUZZ_BINS)

$(FUZZ_BUILD)/lib/%.o: lib/%.c $(HDRS) Makefile | deps-ok
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_BUILD)/liblora.a: $(LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/bin/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_BUILD)/liblora.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/liblora.a $(LIBS)

bench: all ## run the benchmarks; prints ratios against in-run baselines
	$(Q)LORA_BUILD=$(abspath $(BUILD)) bench/run

demo: all ## build everything and show a pipeline on a generated model
	$(Q)LORA_BUILD=$(abspath $(BUILD)) tests/demo

install: all ## install binaries, man pages and completions under DESTDIR/PREFIX
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 \
	  $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 755 $(BINS) $(DESTDIR)$(BINDIR)
	install -m 644 $(wildcard man/*.1) $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5
	install -m 644 $(wildcard man/*.7) $(DESTDIR)$(MANDIR)/man7
	install -m 644 $(wildcard completions/bash/*) $(DESTDIR)$(BASHCOMPDIR)
	install -m 644 $(wildcard completions/zsh/*) $(DESTDIR)$(ZSHCOMPDIR)
	install -m 644 $(wildcard completions/fish/*) $(DESTDIR)$(FISHCOMPDIR)

uninstall: ## remove what install put in place
	rm -f $(BINS:$(BUILD)/bin/%=$(DESTDIR)$(BINDIR)/%)
	rm -f $(patsubst man/%,$(DESTDIR)$(MANDIR)/man1/%,$(wildcard man/*.1))
	rm -f $(patsubst man/%,$(DESTDIR)$(MANDIR)/man5/%,$(wildcard man/*.5))
	rm -f $(patsubst man/%,$(DESTDIR)$(MANDIR)/man7/%,$(wildcard man/*.7))
	rm -f $(patsubst completions/bash/%,$(DESTDIR)$(BASHCOMPDIR)/%,$(wildcard completions/bash/*))
	rm -f $(patsubst completions/zsh/%,$(DESTDIR)$(ZSHCOMPDIR)/%,$(wildcard completions/zsh/*))
	rm -f $(patsubst completions/fish/%,$(DESTDIR)$(FISHCOMPDIR)/%,$(wildcard completions/fish/*))

clean: ## remove build directories
	rm -rf build build-san build-nompi $(FUZZ_BUILD)

deps: ## install missing Debian packages (or print their names)
	$(Q)tests/deps install $(DEB_PKGS)

# Cheap check run before every build: only calls apt when something is missing.
.PHONY: deps-ok
deps-ok:
	$(Q)tests/deps ensure $(DEB_PKGS)

help: ## list targets
	@grep -E '^[a-z]+:.*## ' Makefile | sed 's/:.*## /\t/'
