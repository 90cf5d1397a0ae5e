"""The libvirt driver (KVM/QEMU, Xen, the libvirt test driver): driver, storage pools, URIs."""
