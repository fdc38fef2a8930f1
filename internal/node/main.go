package node

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/attest/tsm"
	"github.com/mse-in-go/mse/internal/spec"
)

// Main is mse-node's command line. It returns the process exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mse-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		appID      = fs.String("app-id", "", "the app id (must equal the spec's)")
		specPath   = fs.String("spec", "", "path to the app's spec (JSON)")
		bundlePath = fs.String("bundle", "", "path to the encrypted bundle")
		bundleFD   = fs.Int("bundle-fd", -1, "descriptor of the encrypted bundle, open for reading (instead of --bundle)")
		listen     = fs.String("listen", "127.0.0.1:0", "address of the app's TLS port: host:port or unix:PATH")
		workDir    = fs.String("workdir", "", "the node's private directory (in a sandbox: a tmpfs)")
		statusFile = fs.String("status-file", "", "where the node writes its status (default WORKDIR/status.json)")
		tee        = fs.String("tee", attest.TypeSim, "TEE type: sim, sgx, tdx or sev-snp")
		simSocket  = fs.String("sim-socket", "", "unix socket of the simulated quoting service (tee sim)")
		attDir     = fs.String("attestation-dir", "/dev/attestation", "Gramine's attestation interface (tee sgx)")
		tsmDir     = fs.String("tsm-dir", tsm.DefaultRoot, "configfs-tsm directory (tee tdx, sev-snp)")
		standby    = fs.Bool("standby", false, "start the Python app host, then wait for the app id and the bundle on --assign-socket (a pooled sandbox); the spec is read after the assignment")
		assignSock = fs.String("assign-socket", "", "unix socket a standby node waits on for its assignment")
		egress     = fs.String("egress", "", "unix:PATH of the runner's CONNECT proxy for outbound HTTPS (tls_mode acme); empty: dial directly")
	)
	// Nothing here changes what the node checks or runs: the app, its
	// runtime, its start timeout and its TLS mode come from the spec, which the
	// config digest covers; limits and attempt bounds are fixed in the binary
	// (docs/runtimes.md).
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	closeOnExecInherited()
	fail := func(err error) int {
		log.Error("node failed", "err", err)
		return 1
	}
	var warm *WarmHost
	var assigned *os.File
	if *standby {
		if *appID != "" || *bundlePath != "" || *bundleFD >= 0 || *assignSock == "" {
			return fail(errors.New("--standby takes the app id and the bundle from its assignment: pass --assign-socket, not --app-id, --bundle or --bundle-fd"))
		}
		var err error
		if warm, err = StartWarmHost("", *workDir); err != nil {
			log.Warn("standby: no warm app host: a Python app will start cold", "err", err)
		}
		defer warm.Stop()
		logStandby(log, "waiting for an app", "socket", *assignSock)
		id, f, err := WaitAssignment(ctx, *assignSock)
		if err != nil {
			if ctx.Err() != nil {
				log.Info("node stopped before an app was assigned")
				return 0
			}
			return fail(err)
		}
		logStandby(log, "assigned", "app_id", id)
		*appID, assigned = id, f
		defer assigned.Close()
	}
	b, err := os.ReadFile(*specPath)
	if err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	var spec spec.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return fail(fmt.Errorf("parse spec: %w", err))
	}
	if *appID != "" && spec.AppID != *appID {
		return fail(fmt.Errorf("the spec is for app %s, not %s", spec.AppID, *appID))
	}
	var issuer attest.Issuer
	switch *tee {
	case attest.TypeSim:
		if *simSocket == "" {
			return fail(errors.New("tee sim needs --sim-socket"))
		}
		issuer = sim.NewIssuer(*simSocket)
	case attest.TypeSGX:
		issuer = sgx.NewIssuer(*attDir)
	case attest.TypeTDX, attest.TypeSEVSNP:
		if issuer, err = tsm.NewIssuer(*tee, tsm.Options{Root: *tsmDir}); err != nil {
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unknown TEE type %q (sim, sgx, tdx, sev-snp)", *tee))
	}
	bundleFile := assigned
	if *bundleFD >= 0 {
		if *bundlePath != "" {
			return fail(errors.New("pass --bundle or --bundle-fd, not both"))
		}
		// Not inherited by the app.
		syscall.CloseOnExec(*bundleFD)
		if bundleFile = os.NewFile(uintptr(*bundleFD), "bundle"); bundleFile == nil {
			return fail(fmt.Errorf("--bundle-fd %d is not an open descriptor", *bundleFD))
		}
		defer bundleFile.Close()
	}
	err = Run(ctx, Config{
		Spec: spec, BundlePath: *bundlePath, Bundle: bundleFile, Listen: *listen, WorkDir: *workDir,
		StatusFile: *statusFile, Issuer: issuer, Logger: log, Warm: warm, Egress: *egress,
	})
	switch {
	case err == nil:
		log.Info("node stopped")
		return 0
	case errors.Is(err, ErrExpired):
		log.Info("node stopped: the app expired")
		return 0
	default:
		return fail(err)
	}
}

// closeOnExecInherited marks every descriptor the node inherited beyond
// stdio close-on-exec (the sandbox passes the node binary and the bundle as
// descriptors): the app inherits none of them.
func closeOnExecInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
