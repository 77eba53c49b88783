# sparkstack: `make demo` runs the main job against the test VM; `make test` runs every test.
# Both install what they need: Debian packages (as root or with sudo), then a venv.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := qemu-system-x86 qemu-utils mmdebstrap shellcheck e2fsprogs openssh-client systemd python3-venv docker-registry git python3-aiohttp
RENDER_DIR := build/render

.PHONY: demo test unit-test vm-test bench deps venv clean

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

unit-test: deps venv
	$(BIN)/pytest tests/unit

vm-test: deps venv
	$(BIN)/pytest tests/vm --durations=25

test: unit-test vm-test

demo: deps venv
	$(BIN)/sparkstack validate
	$(BIN)/sparkstack plan
	rm -rf $(RENDER_DIR) && $(BIN)/sparkstack render --group spark --out $(RENDER_DIR)/spark
	$(BIN)/sparkstack testvm up
	$(BIN)/python tests/artifact_servers.py up
	$(BIN)/pyinfra -y inventory.py deploy.py --limit testvm
	$(BIN)/sparkstack testvm ssh llm-switch qwen
	$(BIN)/sparkstack testvm ssh llm-switch status
	@echo "asking the hot model through the front door (127.0.0.1:30080 on the Spark):"
	$(BIN)/sparkstack testvm ssh -- curl -fsS --retry 10 --retry-delay 1 --retry-all-errors http://127.0.0.1:30080/v1/chat/completions \
		-H "'Content-Type: application/json'" \
		-d "'{\"model\": \"qwen\", \"max_tokens\": 8, \"messages\": [{\"role\": \"user\", \"content\": \"What is 12*17?\"}]}'"

bench: deps venv
	$(BIN)/python benchmarks/bench_deploy.py
	$(BIN)/python benchmarks/bench_switch.py
	$(BIN)/python benchmarks/bench_artifacts.py
	$(BIN)/python benchmarks/bench_frontdoor.py

clean:
	-$(BIN)/python tests/artifact_servers.py down
	-$(BIN)/sparkstack testvm down
	rm -rf $(VENV) build
