# docker CMD...: the docker CLI with a deadline on every call (a build, a save or a ctr import that hangs must not
# hold make test forever): DOCKER_TIMEOUT seconds each, default 900. Sourced by images.sh; needs `docker` on PATH.
# The CLI's path is resolved once: `timeout` runs programs, not shell functions or builtins.
docker_bin=$(command -v docker) || { echo "meshconf: the docker CLI is not on PATH" >&2; return 3 2>/dev/null || exit 3; }
docker() { timeout --kill-after=15 "${DOCKER_TIMEOUT:-900}" "$docker_bin" "$@"; }
