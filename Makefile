# bus-integration-codex — build, run, test.
#
#   make run      the local stack: Events API (memory) + worker + REST front door
#   make test     every test, with -race, on real codex, Redis and PostgreSQL
#   make install  put every command on PATH (PREFIX=/usr/local by default)
#   make compose-test  the local compose stack end to end (README "Local compose")

GO            ?= go
PREFIX        ?= /usr/local
CODEX_VERSION := 0.171.0
TOOLS         := $(CURDIR)/.tools
CODEX         := $(TOOLS)/codex/node_modules/.bin/codex
ASYNCAPI_VERSION := 3.6.6
ASYNCAPI      := $(TOOLS)/asyncapi/node_modules/@asyncapi/parser
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The docker compose v2 CLI plugin, built from its Go module when missing
# (Debian 12 does not package it); v2.35 still speaks Docker API 1.41 (the
# engine of Debian's docker.io 20.10).
COMPOSE_VERSION := v2.35.1
ARGS          ?=

.PHONY: all build install run test test-deps codex asyncapi servers lint bench selftest clean \
	test-codex-latest compose-install compose-context compose-test

all: build

build:
	$(GO) build ./...

install:
	GOBIN=$(PREFIX)/bin $(GO) install ./cmd/...
	@echo "installed: $$(ls $(PREFIX)/bin | grep '^bus' | tr '\n' ' ')"

run:
	$(GO) run ./cmd/bus-local-stack $(ARGS)

selftest:
	$(GO) run ./cmd/bus-integration-codex --self-test

# The pinned Codex CLI, installed project-locally (not globally); the
# stamp names the version, so moving CODEX_VERSION reinstalls it.
CODEX_STAMP := $(TOOLS)/codex/.installed-$(CODEX_VERSION)
codex: $(CODEX_STAMP)
$(CODEX_STAMP):
	rm -rf $(TOOLS)/codex
	npm install --prefix $(TOOLS)/codex --no-audit --no-fund --loglevel=error @openai/codex@$(CODEX_VERSION)
	touch $@

# The official AsyncAPI parser, to validate the worker's AsyncAPI document.
asyncapi: $(ASYNCAPI)
$(ASYNCAPI):
	npm install --prefix $(TOOLS)/asyncapi --no-audit --no-fund --loglevel=error @asyncapi/parser@$(ASYNCAPI_VERSION)

# Redis and PostgreSQL server binaries for the tests (Debian packages; the
# tests start their own servers on loopback ports in temporary directories).
servers:
	@if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null; \
		else \
			echo "install redis-server and postgresql (Debian packages) to run the Redis and PostgreSQL tests"; \
		fi; \
	fi

test-deps: codex asyncapi servers

test: test-deps
	BUS_TEST_CODEX_COMMAND=$(CODEX) BUS_TEST_ASYNCAPI_PARSER=$(ASYNCAPI) $(GO) test -race -count=1 -timeout 45m ./...

# The packages whose tests drive the real codex binary.
CODEX_TEST_PKGS := ./pkg/appserver ./internal/provider/codex ./internal/agents ./internal/e2e

# The codex tests again, against the newest published @openai/codex, so
# protocol drift fails CI with a clear message instead of production.
test-codex-latest:
	@latest=$$(npm view @openai/codex version) || { echo "test-codex-latest: cannot ask the npm registry for the newest @openai/codex"; exit 1; }; \
	echo "== codex: pinned $(CODEX_VERSION), newest published $$latest"; \
	if [ "$$latest" = "$(CODEX_VERSION)" ]; then echo "the pinned codex is the newest: make test covered it"; exit 0; fi; \
	dir=$(TOOLS)/codex-$$latest; \
	[ -x $$dir/node_modules/.bin/codex ] || npm install --prefix $$dir --no-audit --no-fund --loglevel=error @openai/codex@$$latest || exit 1; \
	BUS_TEST_CODEX_COMMAND=$$dir/node_modules/.bin/codex BUS_TEST_REQUIRE_CODEX=1 $(GO) test -race -count=1 -timeout 30m $(CODEX_TEST_PKGS) || { \
		echo "FAIL: the codex tests fail on the newest @openai/codex $$latest (pinned: $(CODEX_VERSION)). Codex's App Server protocol or behaviour drifted: read the failures above, regenerate the schema with 'codex app-server generate-json-schema --experimental', adapt pkg/appserver and internal/provider/codex, then move CODEX_VERSION."; exit 1; }

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: test-deps
	BUS_TEST_CODEX_COMMAND=$(CODEX) $(GO) run ./tools/bus-bench $(ARGS)

# The local compose stack (compose.yaml; README "Local compose").
COMPOSE_ENV := GO=$(GO) TOOLS=$(TOOLS) CODEX_VERSION=$(CODEX_VERSION) COMPOSE_VERSION=$(COMPOSE_VERSION)

# docker.io, mmdebstrap and the docker compose plugin, when missing.
compose-install:
	$(COMPOSE_ENV) scripts/compose/install.sh all

# What `docker compose up --build` needs and cannot make offline: the Go
# binaries and Codex's native binary in docker/build, the local Debian base image.
compose-context:
	$(COMPOSE_ENV) scripts/compose/context.sh

# Install, start dockerd if none runs, build, up (static provider), smoke, down -v.
compose-test:
	$(COMPOSE_ENV) scripts/compose/test.sh

clean:
	rm -rf $(TOOLS) bin docker/build
