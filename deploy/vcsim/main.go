// Command vcsim serves govmomi's vCenter simulator (Debian's golang-github-vmware-govmomi-dev
// ships the library only, without the upstream vcsim main).
//
// Credentials come from the environment (VCSIM_USERNAME / VCSIM_PASSWORD), never from flags, so
// the password does not show in `ps`. When a password is set the simulator enforces it; without
// one it accepts any non-empty username/password, as upstream vcsim does.
//
// Once listening it prints one line "VCSIM_URL=<url without credentials>" on stdout (and writes
// the same URL to -url-file if given) so a supervisor can wait for readiness.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address host:port (port 0 = pick a free one)")
	dc := flag.Int("dc", 1, "datacenters")
	cluster := flag.Int("cluster", 1, "clusters per datacenter")
	clusterHost := flag.Int("host", 2, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	ds := flag.Int("ds", 1, "datastores (real temp directories, removed on exit)")
	vms := flag.Int("vm", 0, "pre-created VMs per resource pool")
	useTLS := flag.Bool("tls", false, "serve https (self-signed test certificate unless -tlscert/-tlskey)")
	certFile := flag.String("tlscert", "", "PEM certificate for -tls")
	keyFile := flag.String("tlskey", "", "PEM key for -tls")
	urlFile := flag.String("url-file", "", "write the service URL here once ready")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = *dc
	model.Cluster = *cluster
	model.ClusterHost = *clusterHost
	model.Host = *standalone
	model.Datastore = *ds
	model.Machine = *vms
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: create model: %s", err)
	}
	// Datastore directories are real temp dirs: remove them however we exit normally.
	defer model.Remove()

	u := &url.URL{Host: *listen}
	user, pass := os.Getenv("VCSIM_USERNAME"), os.Getenv("VCSIM_PASSWORD")
	if pass != "" {
		if user == "" {
			user = "administrator@vsphere.local"
		}
		u.User = url.UserPassword(user, pass)
	}
	model.Service.Listen = u

	if *useTLS {
		cfg := &tls.Config{}
		if *certFile != "" {
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				log.Fatalf("vcsim: load TLS key pair: %s", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		model.Service.TLS = cfg
	}

	server := model.Service.NewServer()
	defer server.Close()

	public := *server.URL
	public.User = nil // never print the password
	fmt.Printf("VCSIM_URL=%s\n", public.String())
	if *urlFile != "" {
		if err := os.WriteFile(*urlFile, []byte(public.String()+"\n"), 0o600); err != nil {
			log.Fatalf("vcsim: write url file: %s", err)
		}
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
