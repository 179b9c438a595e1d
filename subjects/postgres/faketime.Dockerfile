# PostgreSQL runs under libfaketime (Debian's package, in the rootfs below), so the clock-skew fault can shift a
# member's wall clock at run time by rewriting one file: FAKETIME_TIMESTAMP_FILE holds the offset ("+0" when no fault
# is on), re-read at most once a second (FAKETIME_CACHE_DURATION).
#
# Only PostgreSQL, not Patroni: bookworm's libfaketime 0.9.10 hangs Python's timed waits (threading.Event.wait(1)
# never returned in this image), so Patroni under it ran its HA loop only when etcd woke it - every ~8.5 s instead of
# every second - lost its leader key each time, and a restarted former leader was left unrewound and down for good
# (3 of 6 kill-and-rejoin runs). Its settings that would spare Python break time.sleep instead (EINVAL with
# FAKETIME_DONT_FAKE_MONOTONIC=1, and in the processes FAKETIME_ONLY_CMDS leaves out). So there is no global
# LD_PRELOAD: Patroni's bin_dir (the compose file) is a copy of PostgreSQL's whose `postgres` is a wrapper that
# preloads libfaketime (CHAOS_FAKETIME_PRELOAD) and execs the real one; CHAOS_FAKETIME_PROGRAMS names it. Patroni starts
# `postgres` from its bin_dir itself (the server and single-user crash recovery); the other tools are links.
# PostgreSQL's monotonic clock shifts with its wall clock: it jumps once, when the offset changes.
ARG BASE
FROM ${BASE}
RUN ln -s "$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$')" /usr/local/lib/libfaketime.so.1 \
 && test -e /usr/local/lib/libfaketime.so.1 \
 && echo +0 > /etc/chaos-clock-offset && chmod 644 /etc/chaos-clock-offset \
 && mkdir /usr/local/lib/chaos-pg-bin \
 && ln -s /usr/lib/postgresql/15/bin/* /usr/local/lib/chaos-pg-bin/ \
 && rm /usr/local/lib/chaos-pg-bin/postgres \
 && printf '#!/bin/sh\nLD_PRELOAD="$CHAOS_FAKETIME_PRELOAD" exec /usr/lib/postgresql/15/bin/postgres "$@"\n' \
      > /usr/local/lib/chaos-pg-bin/postgres \
 && chmod 755 /usr/local/lib/chaos-pg-bin/postgres
ENV CHAOS_FAKETIME_PRELOAD=/usr/local/lib/libfaketime.so.1 \
    FAKETIME_TIMESTAMP_FILE=/etc/chaos-clock-offset \
    FAKETIME_CACHE_DURATION=1 \
    CHAOS_FAKETIME_PROGRAMS=postgres
