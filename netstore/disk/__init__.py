# The disk package: image formats and layer chains, knowing no service.
# api.py (the DiskImage protocol, errors), raw.py, qcow2/, formats/ (vdi,
# vmdk, vhd, vhdx), fdio.py (shared fd I/O), images.py (probe, open,
# create, convert, resize by format), layers.py (qcow2 chains), media.py
# (the medium vocabulary and its type rules).
"""Disk images: formats, layers and the medium rules."""
