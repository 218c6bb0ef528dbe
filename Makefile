# djinn: `make run` starts the daemon, `make test` runs every test.
# Both install what they need on a Debian machine that has only the Rust toolchain.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PREFIX ?= /usr/local

# Needed to build: JACK and ALSA headers (jack, midir), libclang (bindgen for rubberband-sys).
BUILD_PACKAGES := libjack-jackd2-dev libasound2-dev libclang-dev pkg-config
# The real peers the tests run against.
TEST_PACKAGES := jackd2 jack-capture jack-midi-clock jack-tools fluidsynth fluid-soundfont-gm \
	ffmpeg sox rubberband-cli espeak-ng python3-zmq systemd libsndfile1

# For the comparison against librosa only (installed from PyPI into target/bench-venv).
BENCH_PACKAGES := python3-venv python3-pip

.PHONY: run test build deps test-deps bench-deps bench soak soak-hostile install ci

# Installs whichever of the given Debian packages are missing.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		echo "jackd2 jackd/tweak_rt_limits boolean false" | $(SUDO) debconf-set-selections; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call apt_install,$(BUILD_PACKAGES))

test-deps: deps
	$(call apt_install,$(TEST_PACKAGES))

build: deps
	$(CARGO) build --release --locked --bins

## run: build release and start djinnd in the foreground on its defaults
run: build
	./target/release/djinnd $(ARGS)

## test: every test of the workspace, end-to-end tests included
test: test-deps
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

bench-deps: test-deps
	$(call apt_install,$(BENCH_PACKAGES))
	[ -x target/bench-venv/bin/python ] || /usr/bin/python3 -m venv target/bench-venv
	target/bench-venv/bin/pip install -q librosa pyzmq

## bench: criterion benches and the comparisons against real peers (release build)
bench: bench-deps build
	$(CARGO) bench --workspace --locked
	/usr/bin/python3 clients/python/bench_ping.py --djinnd ./target/release/djinnd
	/usr/bin/python3 clients/python/bench_jack_load.py --djinnd ./target/release/djinnd
	/usr/bin/python3 clients/python/bench_render.py --djinn ./target/release/djinn
	/usr/bin/python3 clients/python/bench_director.py --djinnd ./target/release/djinnd
	/usr/bin/python3 clients/python/bench_clock.py --djinnd ./target/release/djinnd \
		--probe ./target/release/djinn-jack-probe
	/usr/bin/python3 clients/python/bench_stretch.py --djinn ./target/release/djinn
	/usr/bin/python3 clients/python/bench_render_file.py --djinn ./target/release/djinn
	target/bench-venv/bin/python clients/python/bench_analysis.py --djinn ./target/release/djinn

## soak: ten minutes on jackd -R at 64 frames with 16 layers; prints the xruns
soak: test-deps build
	/usr/bin/python3 clients/python/soak.py --djinnd ./target/release/djinnd

## soak-hostile: ten minutes of a DJ set under attack (stuck subscribers, connection
##   floods, malformed frames, NaN layers); prints RSS, xruns and pings
soak-hostile: test-deps build
	/usr/bin/python3 clients/python/soak_hostile.py --djinnd ./target/release/djinnd

## install: binaries, systemd unit and user (run as root), then
##   systemctl daemon-reload && systemctl enable --now djinnd
install: build
	install -Dm755 target/release/djinnd $(DESTDIR)$(PREFIX)/bin/djinnd
	install -Dm755 target/release/djinn $(DESTDIR)$(PREFIX)/bin/djinn
	install -Dm644 systemd/djinnd.service $(DESTDIR)/etc/systemd/system/djinnd.service
	install -Dm644 systemd/djinn.sysusers.conf $(DESTDIR)/usr/lib/sysusers.d/djinn.conf
	install -Dm644 README.md $(DESTDIR)$(PREFIX)/share/doc/djinn/README.md
	install -Dm644 docs/protocol.md $(DESTDIR)$(PREFIX)/share/doc/djinn/protocol.md
	mkdir -p $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	target/release/djinn completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/djinn
	[ -n "$(DESTDIR)" ] || systemd-sysusers

ci:
	bash .ci/run
