"""What crossvisor runs or serves at run time besides its Python code, shipped inside the package
(read with ``importlib.resources``, never by a path into a source tree): the guest image builds
(``guests/``), the local libvirtd (``libvirt/``), NetBox and the vCenter simulator for tests and
benchmarks (``netbox/``, ``vcsim/``), the Grafana dashboard and Prometheus rules (``grafana/``,
``prometheus/``), the example campaigns (``examples/``) and the container deployment files."""
