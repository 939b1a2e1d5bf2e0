# shellcheck shell=bash
# Set-up steps shared by ./try and ./test (sourced, not run): named phases with their times,
# the Debian packages of requirements-apt.txt, pikube's virtualenv. Each step does only what
# is missing, so a second run reuses what the first installed.

PIKUBE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PIKUBE_VENV="${PIKUBE_VENV:-$PIKUBE_ROOT/.venv}"
export DEBIAN_FRONTEND=noninteractive

_phase_no=0
_phase_total=0
_phase_name=""
_phase_started=0

say() { printf '%s\n' "$*" >&2; }

# phases TOTAL: how many phases this run has (for the "[N/TOTAL]" prefix)
phases() { _phase_total=$1; }

# phase NAME: start the next phase
phase() {
  _phase_no=$((_phase_no + 1))
  _phase_name=$1
  _phase_started=$(date +%s%N)
  say "[$_phase_no/$_phase_total] $_phase_name ..."
}

# done_phase [WHAT]: end the current phase with what it did and its time
done_phase() {
  local tenths=$((($(date +%s%N) - _phase_started) / 100000000))
  say "[$_phase_no/$_phase_total] $_phase_name${1:+: $1} $((tenths / 10)).$((tenths % 10)) s"
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# apt_packages SCOPE: the packages requirements-apt.txt lists for SCOPE (try: the `try` lines;
# test: every line), minus those whose `unless=COMMAND` is on PATH already.
apt_packages() {
  local scope=$1 package who rest unless
  while read -r package who rest; do
    case $package in '' | '#'*) continue ;; esac
    if [ "$scope" = try ] && [ "$who" != try ]; then continue; fi
    unless=""
    case $rest in unless=*) unless=${rest%%[[:space:]]*} unless=${unless#unless=} ;; esac
    if [ -n "$unless" ] && command -v "$unless" >/dev/null 2>&1; then continue; fi
    printf '%s\n' "$package"
  done <"$PIKUBE_ROOT/requirements-apt.txt"
}

# missing_packages PACKAGE...: those not installed
missing_packages() {
  local package
  for package in "$@"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
      printf '%s\n' "$package"
    fi
  done
}

# The packaged apt-cacher-ng starts on every address when installed; the lab runs its own on
# 127.0.0.1:3142 (tests/lab/acng.py), so the one we just installed must not hold the port.
# Only its own pid file is used: a lab's apt-cacher-ng on the same machine is left alone.
_disable_packaged_acng() {
  if [ -d /run/systemd/system ]; then
    systemctl disable --now apt-cacher-ng >/dev/null 2>&1 || true
  else
    update-rc.d apt-cacher-ng disable >/dev/null 2>&1 || true
    if [ -f /run/apt-cacher-ng/pid ]; then
      start-stop-daemon --stop --quiet --retry 15 --pidfile /run/apt-cacher-ng/pid \
        --exec /usr/sbin/apt-cacher-ng >/dev/null 2>&1 || true
    fi
  fi
}

# ensure_apt SCOPE: install what requirements-apt.txt lists for SCOPE and is missing
# (apt-get update first). Without root, missing packages are only named (returns 1).
ensure_apt() {
  local log wanted missing
  mapfile -t wanted < <(apt_packages "$1")
  mapfile -t missing < <(missing_packages "${wanted[@]}")
  if [ "${#missing[@]}" -eq 0 ]; then
    done_phase "all installed"
    return 0
  fi
  if ! is_root; then
    say "missing Debian packages: ${missing[*]} (run as root to install them)"
    done_phase "not installed"
    return 1
  fi
  say "installing: ${missing[*]}"
  log=$(mktemp /tmp/pikube-apt.XXXXXX.log)
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "apt-get failed (full log: $log)"
    return 1
  fi
  rm -f "$log"
  case " ${missing[*]} " in *" apt-cacher-ng "*) _disable_packaged_acng ;; esac
  done_phase "installed ${#missing[@]}"
}

# ensure_venv EXTRA: pikube installed (editable) in $PIKUBE_VENV, with the pyproject extra
# EXTRA ("" or "test"). Reinstalls only when pyproject.toml changed or the extra is missing.
ensure_venv() {
  local extra=$1 stamp="$PIKUBE_VENV/.pikube-installed" want have log spec
  want=$(sha256sum "$PIKUBE_ROOT/pyproject.toml" | cut -d' ' -f1)
  have=$(cat "$stamp" 2>/dev/null || true)
  if "$PIKUBE_VENV/bin/python" -c '' 2>/dev/null &&
    { [ "$have" = "$want test" ] || [ "$have" = "$want $extra" ]; }; then
    done_phase "up to date ($PIKUBE_VENV)"
    return 0
  fi
  if ! "$PIKUBE_VENV/bin/python" -c '' 2>/dev/null; then
    rm -rf "$PIKUBE_VENV"
    python3 -m venv "$PIKUBE_VENV"
  fi
  spec="$PIKUBE_ROOT${extra:+[$extra]}"
  log=$(mktemp /tmp/pikube-pip.XXXXXX.log)
  if ! "$PIKUBE_VENV/bin/pip" install --disable-pip-version-check -e "$spec" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "pip failed (full log: $log)"
    return 1
  fi
  rm -f "$log"
  printf '%s %s\n' "$want" "$extra" >"$stamp"
  done_phase "installed $("$PIKUBE_VENV/bin/pikube" --version | paste -sd' ')"
}
