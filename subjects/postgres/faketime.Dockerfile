# Every process of a member runs under libfaketime (Debian's package, in the rootfs below), so the clock-skew fault
# can shift the member's wall clock at run time by rewriting one file: FAKETIME_TIMESTAMP_FILE holds the offset
# ("+0" when no fault is on), re-read at most once a second (FAKETIME_CACHE_DURATION). The monotonic clocks shift
# with it: bookworm's libfaketime 0.9.10 with FAKETIME_DONT_FAKE_MONOTONIC=1 fails Python's time.sleep (an absolute
# clock_nanosleep on CLOCK_MONOTONIC) with EINVAL, which killed Patroni the moment an offset was written. A shifted
# monotonic clock only jumps once, when the offset changes; durations measured across that jump are off by it
# (sleepers are not stalled: libfaketime converts their deadlines with the same offset).
# A symlink at a fixed path, so LD_PRELOAD names no architecture.
ARG BASE
FROM ${BASE}
RUN ln -s "$(dpkg -L libfaketime | grep '/libfaketime\.so\.1$')" /usr/local/lib/libfaketime.so.1 \
 && test -e /usr/local/lib/libfaketime.so.1 \
 && echo +0 > /etc/chaos-clock-offset && chmod 644 /etc/chaos-clock-offset
ENV LD_PRELOAD=/usr/local/lib/libfaketime.so.1 \
    FAKETIME_TIMESTAMP_FILE=/etc/chaos-clock-offset \
    FAKETIME_CACHE_DURATION=1
