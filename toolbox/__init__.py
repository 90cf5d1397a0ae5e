"""The disk and package toolbox the drivers and stages share: disk conversion (qemu-img), OVA
packages, packaging a VM for export, guest images."""
