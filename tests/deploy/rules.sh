#!/usr/bin/env bash
# Checks deploy/prometheus/log-capturer.rules.yml: `promtool check rules`
# (syntax, PromQL, templates) and `promtool test rules` (each alert fires on
# the series of log-capturer.rules.test.yml that should fire it, and on no
# other). promtool comes with Debian's `prometheus` package.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "rules.sh: $*" >&2; }
command -v promtool >/dev/null || { say "promtool missing (apt-get install prometheus)"; exit 1; }

promtool check rules deploy/prometheus/log-capturer.rules.yml
promtool test rules deploy/prometheus/log-capturer.rules.test.yml
