# On a fresh Debian 12 machine, as root:
#   make demo   a real Redis Sentinel failover in network namespaces, narrated
#   make test   lint (ruff, mypy, promtool), then unit, namespace and drill tests
#               (real kernel, real redis-sentinel), then the Debian package built,
#               installed, tested as installed and purged
#   make deb    dist/vipfloat_<version>_<arch>.deb (dh-virtualenv), lintian-clean
# Both install what they need first (apt packages, a virtualenv in .venv).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := redis-server redis-sentinel redis-tools iproute2 iputils-arping iputils-ping \
                gcc libc6-dev vagrant vagrant-libvirt shellcheck \
                tcpdump conntrack nftables procps util-linux time systemd \
                build-essential debhelper dh-virtualenv python3.11-venv lintian prometheus

.PHONY: install deps venv fast-hook lint test unit deb package-test demo bench chaos mutate clean

install: deps venv fast-hook

# Debian packages. Redis's own services are kept from starting (policy-rc.d):
# the lab runs its own redis-server and redis-sentinel inside namespaces.
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && \
	  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
	  apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
	  rm -f /usr/sbin/policy-rc.d; exit $$rc; \
	fi

# A regular (not editable) install, as on a real host: the console scripts that
# Sentinel and the lab exec are the installed ones, so they are reinstalled
# whenever the sources change. (An editable install also adds ~16 ms to every
# Python start-up, which the hook's benchmarks would wrongly count.)
SOURCES := $(shell find vipfloat -name '*.py')

$(VENV)/.installed: pyproject.toml $(SOURCES)
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[test]'
	touch $@

venv: $(VENV)/.installed

# vipfloat-hook-fast: the hook's fast path in C (no Python start-up on the
# failover's critical path). It falls back to the Python vipfloat-hook named
# here; on a real host, for example:
#   make fast-hook FAST_HOOK=/usr/local/bin/vipfloat-hook-fast PYTHON_HOOK=/usr/local/bin/vipfloat-hook
CC          ?= cc
FAST_HOOK   ?= $(VENV)/bin/vipfloat-hook-fast
PYTHON_HOOK ?= $(abspath $(VENV))/bin/vipfloat-hook

# Always rebuilt (it takes a fraction of a second): a symlink left at FAST_HOOK
# would look up to date to make, and is replaced, never written through.
fast-hook: fasthook/vipfloat-hook-fast.c
	mkdir -p $(dir $(FAST_HOOK))
	$(CC) -O2 -Wall -Wextra -Werror -DVIPFLOAT_HOOK='"$(PYTHON_HOOK)"' -o $(FAST_HOOK).new $<
	mv -f $(FAST_HOOK).new $(FAST_HOOK)

# Static checks, first in `make test` so that a finding fails it in seconds:
# ruff over all the Python, mypy (strict) over the package. Both are pinned in
# pyproject's test extra and configured there ([tool.ruff], [tool.mypy]). Then
# the Prometheus alerting rules: promtool's syntax check and its unit tests.
lint: venv
	$(VENV)/bin/ruff check vipfloat tests bench tools
	$(VENV)/bin/mypy vipfloat
	cd examples/prometheus && promtool check rules vipfloat-alerts.yml && \
	  promtool test rules vipfloat-alerts.test.yml

# The package is built and tested last: it needs the lab's tests to pass anyway.
test: install lint
	$(PY) -m pytest -q
	$(MAKE) deb package-test

# The Debian package (debian/, tools/build-deb): a copy of the tree built with
# dpkg-buildpackage, then lintian (no error allowed).
deb: deps
	tools/build-deb

# Install it, test it as installed (tests/package, the namespace tests and two
# drills against /usr/bin), purge it, check nothing is left (tools/package-test).
package-test: venv
	tools/package-test

unit: venv
	$(PY) -m pytest -q tests/unit

demo: install
	$(PY) -m vipfloat.lab.demo

bench: install
	$(PY) bench/hook_latency.py --rounds 10
	$(PY) bench/failover.py --rounds 5

# Seeded faults against the lab, judged by invariants (see the README).
MINUTES ?= 10
SEED    ?= 1
chaos: install
	$(PY) bench/chaos.py --minutes $(MINUTES) --seed $(SEED)

# Mutation testing over the pure core (decide, authority, config, the frame
# builders) against its unit tests, in a temporary copy of the tree, one worker.
# Installs the pinned mutmut (pyproject's `mutate` extra) into the venv. Ends with
# `MUTATION killed K of N`; survivors that cannot change behaviour are listed,
# with why, in tests/mutation-equivalent.txt (see tools/mutate.py).
mutate: venv
	$(PY) tools/mutate.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
