# shellcheck shell=bash
# Shared settings for the private test dockerd (sourced by up.sh / down.sh,
# and usable by callers: `source tests/docker/env.sh`).
#
# Keep LC_DOCKER_DIR short: unix socket paths are limited to 108 bytes and
# dockerd's managed containerd puts its sockets under $LC_DOCKER_DIR/exec.
# shellcheck disable=SC2034 # used by the scripts that source this file
LC_DOCKER_DIR="${LC_DOCKER_DIR:-/tmp/log-capturer-docker}"
LC_DOCKER_SOCK="$LC_DOCKER_DIR/docker.sock"
LC_DOCKER_PIDFILE="$LC_DOCKER_DIR/docker.pid"
LC_DOCKER_LOG="$LC_DOCKER_DIR/dockerd.log"
LC_DOCKER_IMAGE="${LC_DOCKER_IMAGE:-busybox:local}"
export DOCKER_HOST="unix://$LC_DOCKER_SOCK"
