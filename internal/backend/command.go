package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/backend/leader"
	"github.com/mse-in-go/mse/internal/backend/netlimit"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/service"
	"github.com/mse-in-go/mse/internal/backend/store"
)

// Command is mse-backend's command line.
func Command() *cobra.Command {
	var dataDir, db string
	root := &cobra.Command{
		Use:           "mse-backend",
		Short:         "MSE operator backend: API, store, runner, SNI router",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&dataDir, "data-dir", envOr("MSE_DATA_DIR", "./mse-data"), "data directory (database, bundles, nodes, simulated platform, admin token)")
	root.PersistentFlags().StringVar(&db, "db", os.Getenv("MSE_DB"), "database: empty for SQLite in the data dir, a SQLite file, or a postgres:// URL")

	var cfg Config
	var capMem int64
	var capCores int
	var logLevel, hardwareFile string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Run the backend (the default command)",
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.DataDir, cfg.DB = dataDir, db
			if hardwareFile != "" {
				hw, err := LoadHardware(hardwareFile)
				if err != nil {
					return err
				}
				cfg.Hardware = hw
			}
			if capMem > 0 || capCores > 0 {
				cfg.Capacity = runner.Resources{MemoryMiB: capMem, Cores: capCores}
			}
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			cfg.Ready = func(i Info) {
				if i.AdminTokenFile == "" {
					i.AdminTokenFile = "none here (the administrator exists: its token is where it was created; `mse-backend user add NAME --admin` makes another)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "mse-backend ready\n  API:     %s\n  router:  %s\n  admin token file: %s\n  node measurement (sim): %s\n  sim root sha256:  %s\n",
					i.APIURL, i.RouterAddr, i.AdminTokenFile, i.Measurement, i.SimRootSHA256)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Run(ctx, cfg)
		},
	}
	f := serve.Flags()
	f.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:8080", "API listen address")
	f.StringVar(&cfg.RouterAddr, "router-addr", "127.0.0.1:8443", "SNI router listen address")
	f.StringVar(&cfg.APITLSCert, "api-tls-cert", "", "serve the API over HTTPS with this PEM certificate (chain)")
	f.StringVar(&cfg.APITLSKey, "api-tls-key", "", "the PEM private key of --api-tls-cert")
	f.StringVar(&cfg.PublicRouterAddr, "public-router-addr", "", "router address given to clients (default: --router-addr)")
	f.StringVar(&cfg.BaseDomain, "base-domain", "mse.localhost", "parent domain of app domains")
	f.StringVar(&cfg.NodeBinary, "node-binary", "", "mse-node executable (default: next to mse-backend)")
	f.StringVar(&cfg.RuntimeDir, "runtime-dir", os.Getenv("MSE_RUNTIME_DIR"), "runtime image store (default DATA_DIR/runtimes)")
	f.StringVar(&cfg.RuntimeCatalog, "catalog", os.Getenv("MSE_RUNTIME_CATALOG"), "runtime catalog file (default DATA_DIR/runtimes.json)")
	f.StringVar(&cfg.Runc, "runc", "", "runc executable that sandboxes nodes (default: runc in PATH)")
	f.IntVar(&cfg.WarmPool, "warm-pool", DefaultWarmPool, "idle pre-warmed sandboxes kept per runtime and hardware entry (0: none, every node starts cold)")
	f.DurationVar(&cfg.MaxStartTimeout, "max-start-timeout", 30*time.Minute, "longest app start timeout (cloud.start_timeout) accepted")
	f.Int64Var(&capMem, "capacity-memory-mib", 0, "memory offered to apps (default: the machine's)")
	f.IntVar(&capCores, "capacity-cores", 0, "cores offered to apps (default: 4 per CPU)")
	f.DurationVar(&cfg.MaxLifetime, "max-lifetime", 30*24*time.Hour, "longest app lifetime accepted")
	f.StringVar(&cfg.BlobsURL, "blobs", os.Getenv("MSE_BLOBS"), "bundle store: a directory (default DATA_DIR/bundles) or s3://BUCKET/PREFIX?endpoint=HOST:PORT&region=REGION[&tls=false] (docs/blobs.md)")
	f.StringVar(&cfg.BlobsCredentials, "blobs-credentials", os.Getenv("MSE_BLOBS_CREDENTIALS"), "AWS shared credentials file for an s3:// --blobs (default: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	f.Int64Var(&cfg.MaxBundleSize, "max-bundle-size", 2<<30, "largest encrypted bundle accepted (bytes)")
	f.DurationVar(&cfg.PollInterval, "poll-interval", time.Second, "how often app statuses are reconciled")
	f.DurationVar(&cfg.BundlePresignTTL, "bundle-presign-ttl", 0, "kubernetes runner with an S3 bundle store: send each node, once its credential is checked, to a presigned URL of its bundle valid this long (e.g. 2m) instead of streaming it through the backend; 0: stream")
	f.StringSliceVar(&cfg.Kube.BundleStoreCIDRs, "kube-bundle-store-cidr", nil, "kubernetes runner with --bundle-presign-ttl: the S3 server's addresses as the pods see them (CIDRs, repeatable), which the apps' NetworkPolicies let nodes reach on the S3 endpoint's port")
	f.DurationVar(&cfg.KeyTimeout, "key-timeout", service.DefaultKeyTimeout, `stop an app whose node waited this long for its owner's key ("no key received")`)
	f.IntVar(&cfg.MaxConns, "max-conns", netlimit.DefaultTotal, "API connections at once, in total")
	f.IntVar(&cfg.MaxConnsPerClient, "max-conns-per-client", netlimit.DefaultPerClient, "API connections at once from one IP address")
	f.StringArrayVar(&cfg.OwnerCAFiles, "owner-ca-file", nil, "PEM roots that tls_mode owner certificates may chain to, beside the system roots (repeatable)")
	f.StringArrayVar(&cfg.ACMEDirectories, "acme-directory", nil, "ACME directory URL that nodes in tls_mode acme may use (repeatable; the first is the default offered to owners)")
	f.StringVar(&cfg.ACMERootsFile, "acme-roots", "", "PEM roots of the ACME CA's HTTPS server, given to nodes with the default --acme-directory (default: the system roots)")
	f.BoolVar(&cfg.EgressPrivate, "acme-private-network", false, "let nodes reach an ACME CA at a loopback or private address (a CA on the operator's own network); off, a tenant cannot point its node's egress at internal services")
	f.StringVar(&cfg.OperatorCert, "operator-cert", "", "PEM certificate (chain) the router terminates tls_mode operator apps with, e.g. a wildcard for the base domain")
	f.StringVar(&cfg.OperatorKey, "operator-key", "", "the PEM private key of --operator-cert")
	f.StringVar(&cfg.OperatorACMEDirectory, "operator-acme-directory", "", "instead of --operator-cert: get a certificate per operator-mode app domain from this ACME CA (TLS-ALPN-01; cached in DATA_DIR/acme)")
	f.StringVar(&cfg.OperatorACMERoots, "operator-acme-roots", "", "PEM roots of --operator-acme-directory's HTTPS server (default: the system roots)")
	f.StringVar(&cfg.OperatorACMEEmail, "operator-acme-email", "", "contact address of the operator's ACME account")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&hardwareFile, "hardware", os.Getenv("MSE_HARDWARE"), "hardware catalog file (JSON; default: the embedded 1g, 2g, 4g and 8g sim entries)")
	f.StringVar(&cfg.Runner, "runner", envOr("MSE_RUNNER", RunnerLocal), "where nodes run: local (sandboxed processes here) or kubernetes (a pod per app)")
	f.StringVar(&cfg.Kube.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubernetes runner: kubeconfig file (default: the in-cluster service account)")
	f.StringVar(&cfg.Kube.Namespace, "namespace", envOr("MSE_NAMESPACE", "mse-apps"), "kubernetes runner: namespace of the apps' pods")
	f.StringVar(&cfg.Kube.NodeImage, "node-image", os.Getenv("MSE_NODE_IMAGE"), "kubernetes runner: image with /mse-node and /mse-fetch, pinned by digest")
	f.StringVar(&cfg.Kube.NodeMeasurement, "node-measurement", "", "kubernetes runner: SHA-256 (hex) of the mse-node in --node-image: the measurement the backend's sim quotes state and the router's operator mode verifies (required with sim hardware)")
	f.StringVar(&cfg.Kube.BundleURL, "bundle-url", os.Getenv("MSE_BUNDLE_URL"), "kubernetes runner: this backend's base URL as pods reach it (they fetch their bundle there)")
	f.StringVar(&cfg.Kube.ImagePrefix, "image-prefix", "", `kubernetes runner: prefix of runtime image references (a registry, "registry.example/mse/")`)
	f.DurationVar(&cfg.LeaderLeaseDuration, "leader-lease-duration", leader.DefaultLeaseDuration, "--leader-election lease: the Lease's duration, how long the loops wait after a leader dies (at least 3s; the leader renews within two thirds of it)")
	f.StringVar(&cfg.LeaderElection, "leader-election", envOr("MSE_LEADER_ELECTION", LeaderPostgres), "replicas on one PostgreSQL database: who runs the loops, by an advisory lock (postgres) or a Kubernetes Lease in --namespace (lease; kubernetes runner)")
	f.StringVar(&cfg.Kube.NodeSelector, "kube-node-selector", "", "kubernetes runner: label selector of the cluster nodes counted as capacity (default all)")
	f.StringSliceVar(&cfg.Kube.BackendCIDRs, "kube-backend-cidr", nil, "kubernetes runner, backend outside the cluster: its addresses as the pods see them (CIDRs, repeatable): the apps' NetworkPolicies admit the router from them and let nodes reach the API there")
	f.BoolVar(&cfg.Kube.HostNetwork, "kube-host-network", false, "kubernetes runner, single-node/test mode: pods on the host's network, each node on 127.0.0.1 and a free port of its own (the backend must run on the kubelet's machine)")
	root.AddCommand(serve)
	root.RunE = serve.RunE
	root.Flags().AddFlagSet(serve.Flags())

	user := &cobra.Command{Use: "user", Short: "Manage users (works on the database directly)"}
	var admin bool
	userAdd := &cobra.Command{
		Use:   "add NAME",
		Short: "Create a user and print its first API token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), dataDir, db, func(st store.Store) error {
				u, tok, err := service.CreateUser(cmd.Context(), st, args[0], admin, time.Now())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "created user %s (%s); its token follows, shown once:\n", u.Name, u.ID)
				fmt.Fprintln(cmd.OutOrStdout(), tok)
				return nil
			})
		},
	}
	userAdd.Flags().BoolVar(&admin, "admin", false, "make the user an administrator")
	userList := &cobra.Command{
		Use: "list", Short: "List users",
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), dataDir, db, func(st store.Store) error {
				us, err := st.ListUsers(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tADMIN\tCREATED")
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", u.ID, u.Name, u.Admin, u.CreatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	user.AddCommand(userAdd, userList, quotaCommand(&dataDir, &db))

	token := &cobra.Command{Use: "token", Short: "Manage API tokens (works on the database directly)"}
	tokenList := &cobra.Command{
		Use: "list USER", Short: "List a user's tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), dataDir, db, func(st store.Store) error {
				u, err := st.GetUserByName(cmd.Context(), args[0])
				if err != nil {
					return fmt.Errorf("user %q: %w", args[0], err)
				}
				ts, err := st.ListTokens(cmd.Context(), u.ID)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tCREATED\tREVOKED")
				for _, t := range ts {
					rev := "-"
					if t.RevokedAt != nil {
						rev = t.RevokedAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.CreatedAt.Format(time.RFC3339), rev)
				}
				return tw.Flush()
			})
		},
	}
	tokenRevoke := &cobra.Command{
		Use: "revoke TOKEN-ID", Short: "Revoke a token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd.Context(), dataDir, db, func(st store.Store) error {
				if err := st.RevokeToken(cmd.Context(), args[0], time.Now().UTC()); err != nil {
					if errors.Is(err, store.ErrNotFound) {
						return fmt.Errorf("no token %s (see `mse-backend token list USER`)", args[0])
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", args[0])
				return nil
			})
		},
	}
	token.AddCommand(tokenList, tokenRevoke)
	root.AddCommand(user, token, runtimeCommand(&dataDir), domainCommand(&dataDir, &db), nodeImageCommand(), backendImageCommand(), simPlatformCommand())
	return root
}

// withStore opens the store for an offline administration command.
func withStore(ctx context.Context, dataDir, db string, fn func(store.Store) error) error {
	if !isPostgres(db) {
		// SQLite lives in the data dir (PostgreSQL does not need it).
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return err
		}
	}
	st, err := OpenStore(ctx, dataDir, db)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
