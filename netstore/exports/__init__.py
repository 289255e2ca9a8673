# netstore/exports - the one wiring layer: it turns the configuration plus the
# registry into what the services serve (iSCSI targets with their logical units,
# switch ports of VM NICs).  Services are handed plain values and never read a
# config file or the registry themselves.
"""The wiring layer: configuration + registry -> targets, logical units, ports.

- :mod:`identity`: what names a logical unit (NAA, serial, reservation file).
- :mod:`units`: opening logical units on images, reused while nothing changes.
- :mod:`targets`: config targets and running VMs -> the targets the iSCSI
  service exports, with the medium types' rules (semantics.md 1).
- :mod:`ports`: VM NICs -> the switch ports they plug into.
- :mod:`watcher`: the one registry watcher the daemon runs.
"""
