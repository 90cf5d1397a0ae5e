"""The vSphere driver (pyvmomi; ESXi and vcsim): driver, virtual devices, disk transfer."""
