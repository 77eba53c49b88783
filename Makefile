# sparkstack: `make demo` runs the main job against a container test host; `make test` runs every tier.
# Both install what they need: Debian packages (as root or with sudo), then a venv.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap shellcheck e2fsprogs openssh-client systemd python3-venv docker-registry git python3-aiohttp \
	docker.io lxcfs iproute2 nftables python3-prometheus-client prometheus chromium
RENDER_DIR := build/render

.PHONY: demo test unit-test hosts-test vm-test bench deps venv clean

deps:
	@missing=""; for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Each tier alone: `make unit-test`, `make hosts-test`, `make vm-test`; `make test` runs all three and prints
# each one's time and slowest tests (tools/test_tiers.sh).
unit-test: deps venv
	TIERS=unit tools/test_tiers.sh

hosts-test: deps venv
	TIERS=hosts tools/test_tiers.sh

vm-test: deps venv
	TIERS=vm tools/test_tiers.sh

test: deps venv
	tools/test_tiers.sh

demo: deps venv
	$(BIN)/sparkstack validate
	$(BIN)/sparkstack plan
	rm -rf $(RENDER_DIR) && $(BIN)/sparkstack render --group spark --out $(RENDER_DIR)/spark
	tools/host_services.sh start
	$(BIN)/sparkstack testhost up --driver container
	$(BIN)/python tests/artifact_servers.py up
	$(BIN)/pyinfra -y inventory.py deploy.py --limit testhost
	@echo "day 2 from the laptop, as the host's sudoer (DGX OS's default user), over pyinfra's own ssh:"
	$(BIN)/sparkstack switch qwen --limit testhost --user spark --sudo
	$(BIN)/sparkstack status --limit testhost --user spark --sudo
	@echo "asking the hot model through the front door (127.0.0.1:30080 on the Spark):"
	$(BIN)/sparkstack testhost ssh -- curl -fsS --retry 10 --retry-delay 1 --retry-all-errors http://127.0.0.1:30080/v1/chat/completions \
		-H "'Content-Type: application/json'" \
		-d "'{\"model\": \"qwen\", \"max_tokens\": 8, \"messages\": [{\"role\": \"user\", \"content\": \"What is 12*17?\"}]}'"
	$(BIN)/sparkstack logs qwen -n 3 --limit testhost --user spark --sudo

bench: deps venv
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_switch.py
	$(BIN)/python benchmarks/bench_artifacts.py
	$(BIN)/python benchmarks/bench_frontdoor.py
	$(BIN)/python benchmarks/bench_ondemand.py

clean:
	-$(BIN)/python tests/artifact_servers.py down
	-$(BIN)/sparkstack testhost down
	-tools/host_services.sh stop
	rm -rf $(VENV) build
