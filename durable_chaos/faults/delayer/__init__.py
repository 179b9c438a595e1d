"""The delayer: a program that runs in a helper container inside a member's network namespace, reads the packets
iptables hands to its NFQUEUE, and lets each go after a while (see `durable_chaos.faults.delay`)."""
