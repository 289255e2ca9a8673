# netstore/vm - VMs on QEMU: the command line of a registered VM (cmdline),
# the QMP client (qmp), the accelerator choice (accel) and the daemon's
# runner of headless VMs (runner), with their files in the state directory.
"""Running registered VMs on QEMU."""
