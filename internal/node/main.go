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
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/attest/tsm"
	"github.com/mse-in-go/mse/internal/config"
)

// Main is mse-node's command line. It returns the process exit code.
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mse-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		appID      = fs.String("app-id", "", "the app id (must equal the spec's)")
		specPath   = fs.String("spec", "", "path to the app's spec (JSON)")
		bundlePath = fs.String("bundle", "", "path to the encrypted bundle")
		listen     = fs.String("listen", "127.0.0.1:0", "address of the app's TLS port")
		workDir    = fs.String("workdir", "", "the node's private directory")
		tee        = fs.String("tee", attest.TypeSim, "TEE type: sim, sgx, tdx or sev-snp")
		simSocket  = fs.String("sim-socket", "", "unix socket of the simulated quoting service (tee sim)")
		attDir     = fs.String("attestation-dir", "/dev/attestation", "Gramine's attestation interface (tee sgx)")
		tsmDir     = fs.String("tsm-dir", tsm.DefaultRoot, "configfs-tsm directory (tee tdx, sev-snp)")
		python     = fs.String("python", "python3", "Python interpreter for python_application")
		attempts   = fs.Int("max-attempts", 10, "failed stage-2 requests before the node gives up")
		health     = fs.Duration("health-timeout", 60*time.Second, "time the app has to answer its health check")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	fail := func(err error) int {
		log.Error("node failed", "err", err)
		return 1
	}
	b, err := os.ReadFile(*specPath)
	if err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	var spec config.Spec
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
	err = Run(ctx, Config{
		Spec: spec, BundlePath: *bundlePath, Listen: *listen, WorkDir: *workDir, Issuer: issuer,
		MaxAttempts: *attempts, Python: *python, HealthTimeout: *health, Logger: log,
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
