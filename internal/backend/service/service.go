// Package service is the backend's logic: it creates apps from an owner's
// configuration and encrypted bundle, spawns their nodes through a runner,
// drives their statuses, stops expired apps, and answers the router's
// lookups. The HTTP API (package api) is a thin layer over it.
package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mse-in-go/mse/internal/backend/blob"
	"github.com/mse-in-go/mse/internal/backend/router"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/store"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/spec"
)

// Config configures the service.
type Config struct {
	Store    store.Store
	Blobs    blob.Store
	Runner   runner.Runner
	Hardware []runner.Hardware
	// Runtimes is the runtime catalog; Images serves their images (optional).
	Runtimes Catalog
	Images   ImageExporter
	// MaxStartTimeout caps an app's start timeout (default 30 minutes).
	MaxStartTimeout time.Duration
	// BaseDomain is the parent of the domains assigned to apps.
	BaseDomain string
	// RouterAddr is where clients reach the SNI router (host:port).
	RouterAddr string
	// TEE is the TEE type the runner's nodes use.
	TEE           string
	SimRootSHA256 string
	MaxBundleSize int64
	MaxLifetime   time.Duration
	PollInterval  time.Duration
	// KeyTimeout bounds how long an app may wait for its owner's key once
	// initializing (default DefaultKeyTimeout); then it is stopped with the
	// reason "no key received".
	KeyTimeout time.Duration
	// BundlePresignTTL, when set, sends nodes that fetch their bundle
	// (runner.BundleServer) to a presigned URL of the blob store, which must
	// be a blob.Presigner, valid this long; zero: the backend streams it.
	BundlePresignTTL time.Duration
	// SweepInterval is how often partial uploads are swept (default 10 min).
	SweepInterval time.Duration
	// SpawnTimeout bounds a spawn (default DefaultSpawnTimeout).
	SpawnTimeout time.Duration
	// SpawnClaim is how long the replica that created an app, or claimed
	// its spawn, has to record its node before the loop may spawn it again:
	// 0 for a single replica, where the loop respawns at once a node-less
	// app a crash left; several replicas need more than SpawnTimeout. With
	// a SpawnGuard (several replicas) it defaults to SpawnTimeout +
	// SpawnClaimMargin.
	SpawnClaim time.Duration
	// OrphanGrace is how long a bundle without an active app is kept by the
	// leader's sweeps (default DefaultOrphanGrace).
	OrphanGrace time.Duration
	// SpawnGuard, for several replicas, orders every replica's spawns
	// against a new leader's adoption of the nodes (leader.SpawnGuard);
	// nil for a backend alone on its store.
	SpawnGuard SpawnGuard
	// OwnerRoots are the roots owner-mode certificates must chain to
	// (default: the system roots).
	OwnerRoots OwnerRoots
	// ACMEDirectories are the ACME CAs (directory URLs) nodes in tls_mode
	// acme may use; the first is the default offered to owners. Empty: tls_mode
	// acme is refused. ACMERootsPEM are the roots of those CAs' HTTPS servers
	// offered with the default (empty: the system roots).
	ACMEDirectories []string
	ACMERootsPEM    string
	// OperatorTLS says that the router can terminate TLS with an operator
	// certificate (--operator-cert or --operator-acme-directory): tls_mode
	// operator is accepted only then.
	OperatorTLS bool
	Logger      *slog.Logger
	Now         func() time.Time
	Registerer  prometheus.Registerer
}

// Service is the backend logic.
type Service struct {
	cfg     Config
	st      store.Store
	log     *slog.Logger
	kick    chan struct{}
	spawnMu sync.Mutex

	quotaOnce sync.Once
	quota     *quotas

	rootsOnce sync.Once
	roots     OwnerRoots

	mApps        *prometheus.GaugeVec
	mTransitions *prometheus.CounterVec
	mCreated     prometheus.Counter
	mLeader      prometheus.Gauge
	mTakeovers   prometheus.Counter

	// orphans: bundles without an active app, and since when (sweepOrphans;
	// only Start and then the leader's loop touch it).
	orphans map[string]time.Time
}

// New builds the service.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Blobs == nil || cfg.Runner == nil {
		return nil, errors.New("service: store, blobs and runner are required")
	}
	if len(cfg.Hardware) == 0 {
		return nil, errors.New("service: empty hardware catalog")
	}
	if cfg.Runtimes == nil {
		return nil, errors.New("service: no runtime catalog")
	}
	if cfg.MaxStartTimeout <= 0 {
		cfg.MaxStartTimeout = 30 * time.Minute
	}
	if cfg.BundlePresignTTL != 0 {
		if _, ok := cfg.Blobs.(blob.Presigner); !ok {
			return nil, errors.New("service: presigned bundle URLs need a blob store that presigns (S3)")
		}
		if cfg.BundlePresignTTL < blob.MinPresignTTL || cfg.BundlePresignTTL > blob.MaxPresignTTL {
			return nil, fmt.Errorf("service: a presigned bundle URL lives %v to %v, not %v", blob.MinPresignTTL, blob.MaxPresignTTL, cfg.BundlePresignTTL)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxBundleSize <= 0 {
		cfg.MaxBundleSize = 2 << 30
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 30 * 24 * time.Hour
	}
	if cfg.KeyTimeout <= 0 {
		cfg.KeyTimeout = DefaultKeyTimeout
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 10 * time.Minute
	}
	if cfg.SpawnTimeout <= 0 {
		cfg.SpawnTimeout = DefaultSpawnTimeout
	}
	if cfg.SpawnGuard != nil && cfg.SpawnClaim == 0 {
		cfg.SpawnClaim = cfg.SpawnTimeout + SpawnClaimMargin
	}
	if cfg.SpawnClaim < 0 || (cfg.SpawnClaim > 0 && cfg.SpawnClaim <= cfg.SpawnTimeout) {
		return nil, fmt.Errorf("service: SpawnClaim %s must be 0 (one replica) or longer than SpawnTimeout %s", cfg.SpawnClaim, cfg.SpawnTimeout)
	}
	if cfg.OrphanGrace <= 0 {
		cfg.OrphanGrace = DefaultOrphanGrace
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	s := &Service{cfg: cfg, st: cfg.Store, log: cfg.Logger, kick: make(chan struct{}, 1), orphans: map[string]time.Time{}}
	s.mApps = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "mse_apps", Help: "Active apps by status, as of the last reconcile pass."}, []string{"status"})
	s.mTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mse_app_transitions_total", Help: "App status transitions."}, []string{"to"})
	s.mCreated = prometheus.NewCounter(prometheus.CounterOpts{Name: "mse_apps_created_total", Help: "Apps created."})
	s.mLeader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "mse_backend_leader", Help: "1 while this replica leads (runs the reconcile loop and the sweeps), else 0."})
	s.mTakeovers = prometheus.NewCounter(prometheus.CounterOpts{Name: "mse_backend_leader_acquired_total", Help: "Times this replica became leader."})
	for _, c := range []prometheus.Collector{s.mApps, s.mTransitions, s.mCreated, s.mLeader, s.mTakeovers} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Store returns the service's store.
func (s *Service) Store() store.Store { return s.st }

// Platform describes the platform to clients.
func (s *Service) Platform() client.Platform {
	p := client.Platform{TEE: s.cfg.TEE, RouterAddr: s.cfg.RouterAddr, BaseDomain: s.cfg.BaseDomain,
		NodeMeasurement: s.cfg.Runner.Measurement(), SimRootSHA256: s.cfg.SimRootSHA256,
		TLSModes: []string{spec.TLSSelf, spec.TLSOwner}}
	if s.cfg.OperatorTLS {
		p.TLSModes = append(p.TLSModes, spec.TLSOperator)
	}
	if len(s.cfg.ACMEDirectories) > 0 {
		p.TLSModes = append(p.TLSModes, spec.TLSACME)
		p.ACME = &spec.ACME{DirectoryURL: s.cfg.ACMEDirectories[0], RootsPEM: s.cfg.ACMERootsPEM}
		p.ACMEDirectories = slices.Clone(s.cfg.ACMEDirectories)
	}
	return p
}

// Hardware lists the catalog with what is free.
func (s *Service) Hardware() []client.Hardware {
	used, total := s.cfg.Runner.Capacity()
	out := make([]client.Hardware, 0, len(s.cfg.Hardware))
	for _, h := range s.cfg.Hardware {
		avail := 0
		if h.MemoryMiB > 0 && h.Cores > 0 {
			m := (total.MemoryMiB - used.MemoryMiB) / h.MemoryMiB
			c := int64((total.Cores - used.Cores) / h.Cores)
			avail = int(min(m, c))
			if avail < 0 {
				avail = 0
			}
		}
		out = append(out, client.Hardware{Name: h.Name, MemoryMiB: h.MemoryMiB, Cores: h.Cores, TEE: h.TEE, Available: avail})
	}
	return out
}

func (s *Service) hardware(name string) (runner.Hardware, error) {
	if name == "" {
		// The CLI's default, when the catalog offers it.
		name = config.DefaultHardware
		if _, err := s.lookupHardware(name); err != nil {
			return s.cfg.Hardware[0], nil
		}
	}
	return s.lookupHardware(name)
}

func (s *Service) lookupHardware(name string) (runner.Hardware, error) {
	var names []string
	for _, h := range s.cfg.Hardware {
		if h.Name == name {
			return h, nil
		}
		names = append(names, h.Name)
	}
	return runner.Hardware{}, errf(ErrInvalid, "unknown hardware %q (offered: %s); see `mse cloud hardware`", name, strings.Join(names, ", "))
}

// NewToken returns a fresh API token and its stored hash.
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	token = "mse_" + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken is how tokens are stored.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Authenticate returns the user holding a token.
func (s *Service) Authenticate(ctx context.Context, token string) (*store.User, error) {
	if token == "" {
		return nil, errf(ErrUnauthenticated, "missing API token: run `mse cloud login --token TOKEN` (ask the operator for a token)")
	}
	t, err := s.st.TokenByHash(ctx, HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errf(ErrUnauthenticated, "unknown API token: check `mse cloud login`, or ask the operator for a new token")
	}
	if err != nil {
		return nil, err
	}
	if t.RevokedAt != nil {
		return nil, errf(ErrUnauthenticated, "this API token was revoked on %s; ask the operator for a new one", t.RevokedAt.UTC().Format(time.RFC3339))
	}
	return s.st.GetUser(ctx, t.UserID)
}

// CreateUser makes a user with a first token (admin only).
func (s *Service) CreateUser(ctx context.Context, caller *store.User, name string, admin bool) (*store.User, string, error) {
	if caller != nil && !caller.Admin {
		return nil, "", errf(ErrForbidden, "only an administrator can create users")
	}
	return CreateUser(ctx, s.st, name, admin, s.cfg.Now())
}

// CreateUser makes a user with a fresh first token in st (also used by the
// offline administration commands).
func CreateUser(ctx context.Context, st store.Store, name string, admin bool, now time.Time) (*store.User, string, error) {
	tok, _, err := NewToken()
	if err != nil {
		return nil, "", err
	}
	u, err := CreateUserWithToken(ctx, st, name, admin, tok, now)
	if err != nil {
		return nil, "", err
	}
	return u, tok, nil
}

// CreateUserWithToken makes a user whose first token is tok (from NewToken);
// the backend's bootstrap writes the token to its file before the user exists.
func CreateUserWithToken(ctx context.Context, st store.Store, name string, admin bool, tok string, now time.Time) (*store.User, error) {
	if !nameRE.MatchString(name) {
		return nil, errf(ErrInvalid, "invalid user name %q: use letters, digits, '-' and '_' (1 to 63 characters)", name)
	}
	u := &store.User{ID: uuid.NewString(), Name: name, Admin: admin, CreatedAt: now.UTC()}
	if err := st.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, errf(ErrConflict, "user %q exists", name)
		}
		return nil, err
	}
	if err := addToken(ctx, st, u, "initial", HashToken(tok), now); err != nil {
		return nil, err
	}
	return u, nil
}

// CreateToken adds a token for u.
func (s *Service) CreateToken(ctx context.Context, u *store.User, name string) (string, error) {
	tok, hash, err := NewToken()
	if err != nil {
		return "", err
	}
	return tok, addToken(ctx, s.st, u, name, hash, s.cfg.Now())
}

func addToken(ctx context.Context, st store.Store, u *store.User, name, hash string, now time.Time) error {
	return st.CreateToken(ctx, &store.Token{ID: uuid.NewString(), UserID: u.ID, Name: name, Hash: hash, CreatedAt: now.UTC()})
}

// RevokeToken revokes a token of the caller (or any, for an admin).
func (s *Service) RevokeToken(ctx context.Context, caller *store.User, id string) error {
	if !caller.Admin {
		toks, err := s.st.ListTokens(ctx, caller.ID)
		if err != nil {
			return err
		}
		found := false
		for _, t := range toks {
			found = found || t.ID == id
		}
		if !found {
			return errf(ErrNotFound, "no token %s", id)
		}
	}
	if err := s.st.RevokeToken(ctx, id, s.cfg.Now().UTC()); errors.Is(err, store.ErrNotFound) {
		return errf(ErrNotFound, "no token %s", id)
	} else if err != nil {
		return err
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// project returns the caller's project by name, creating the default one on demand.
func (s *Service) project(ctx context.Context, u *store.User, name string) (*store.Project, error) {
	if name == "" {
		name = config.DefaultProject
	}
	p, err := s.st.GetProjectByName(ctx, u.ID, name)
	if err == nil {
		return p, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if name != config.DefaultProject {
		return nil, errf(ErrNotFound, "no project %q: create it with `mse cloud project create %s`", name, name)
	}
	return s.CreateProject(ctx, u, name)
}

// CreateProject creates a project for u.
func (s *Service) CreateProject(ctx context.Context, u *store.User, name string) (*store.Project, error) {
	if !nameRE.MatchString(name) {
		return nil, errf(ErrInvalid, "invalid project name %q: use letters, digits, '-' and '_' (1 to 63 characters)", name)
	}
	p := &store.Project{ID: uuid.NewString(), OwnerID: u.ID, Name: name, CreatedAt: s.cfg.Now().UTC()}
	if err := s.st.CreateProject(ctx, p); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return s.st.GetProjectByName(ctx, u.ID, name)
		}
		return nil, err
	}
	return p, nil
}

// ListProjects lists u's projects.
func (s *Service) ListProjects(ctx context.Context, u *store.User) ([]store.Project, error) {
	return s.st.ListProjects(ctx, u.ID)
}

// domainLabel turns an app name into the first part of a DNS label: lower
// case, '.' and '_' as '-', at most 50 characters so that with "-" and 12 hex
// characters of the app id the label stays within DNS's 63.
func domainLabel(name string) string {
	l := strings.ToLower(name)
	l = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			return r
		}
		return '-'
	}, l)
	if len(l) > 50 {
		l = l[:50]
	}
	l = strings.Trim(l, "-")
	if l == "" {
		l = "app"
	}
	return l
}

// CreateApp stores the encrypted bundle, records the app and spawns its node.
func (s *Service) CreateApp(ctx context.Context, u *store.User, req client.CreateAppRequest, bundle io.Reader) (*store.App, error) {
	now := s.cfg.Now().UTC()
	if err := config.ValidateName(req.Name); err != nil {
		return nil, errf(ErrInvalid, "invalid app name: %v", err)
	}
	hw, err := s.hardware(req.Hardware)
	if err != nil {
		return nil, err
	}
	if req.ExpiresAt.IsZero() {
		return nil, errf(ErrInvalid, "expires_at is required")
	}
	if !req.ExpiresAt.After(now) {
		return nil, errf(ErrInvalid, "expires_at %s is in the past", req.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if max := now.Add(s.cfg.MaxLifetime); req.ExpiresAt.After(max) {
		return nil, errf(ErrInvalid, "expires_at %s is beyond this operator's maximum app lifetime (%s, until %s); choose an earlier expiration_date",
			req.ExpiresAt.UTC().Format(time.RFC3339), s.cfg.MaxLifetime, max.Format(time.RFC3339))
	}
	digest, err := hex.DecodeString(req.CodeDigest)
	if err != nil || len(digest) != sha256.Size || strings.ToLower(req.CodeDigest) != req.CodeDigest {
		return nil, errf(ErrInvalid, "code_digest must be 64 lowercase hex characters (SHA-256 of the encrypted bundle)")
	}
	rt, err := s.runtime(req.Runtime)
	if err != nil {
		return nil, err
	}
	startTimeout, err := s.startTimeout(req.StartTimeoutSeconds)
	if err != nil {
		return nil, err
	}
	p, err := s.project(ctx, u, req.Project)
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	sp := config.Spec{
		AppID: id, Name: req.Name, Entrypoint: req.Entrypoint, PythonApplication: req.PythonApplication,
		HealthcheckEndpoint: req.HealthcheckEndpoint, ExpiresAt: req.ExpiresAt.UTC().Truncate(time.Second), TLSMode: req.TLSMode,
		OwnerCertificate: req.OwnerCertificate, Runtime: rt, StartTimeoutSeconds: startTimeout,
	}
	reserve, err := s.appDomain(ctx, u, req, &sp)
	if err != nil {
		return nil, err
	}
	if err := sp.Validate(); err != nil {
		return nil, errf(ErrInvalid, "%v", err)
	}
	if len(sp.Entrypoint) > 256 {
		return nil, errf(ErrInvalid, "entrypoint has more than 256 arguments")
	}
	specJSON, err := jsonMarshal(sp)
	if err != nil {
		return nil, err
	}

	res, err := s.reserve(ctx, u, hw)
	if err != nil {
		return nil, err
	}
	defer res.release()
	maxSize := res.maxBundle(s.cfg.MaxBundleSize)
	var want [32]byte
	copy(want[:], digest)
	info, err := blob.PutVerified(ctx, s.cfg.Blobs, id, bundle, maxSize, want)
	var de *blob.DigestError
	if errors.As(err, &de) {
		return nil, errf(ErrInvalid, "the uploaded bundle's SHA-256 %s is not the code_digest %s you declared: the upload was corrupted or truncated; deploy again",
			hex.EncodeToString(de.Got[:])[:12], req.CodeDigest[:12])
	}
	if errors.Is(err, blob.ErrTooLarge) {
		if maxSize < s.cfg.MaxBundleSize {
			return nil, res.tooLarge()
		}
		return nil, errf(ErrTooLarge, "the bundle is larger than this operator's limit of %d bytes", s.cfg.MaxBundleSize)
	}
	if err != nil {
		return nil, s.blobError("store the bundle", err)
	}
	if err := res.stored(ctx, info.Size); err != nil {
		_ = s.cfg.Blobs.Delete(ctx, id)
		return nil, err
	}
	if reserve {
		// After the upload, just before the app is recorded: of two tenants
		// with valid certificates for one domain, the first to get here
		// holds it.
		if err := s.reserveDomain(ctx, u, sp.Domains[0], store.ProofCertificate); err != nil {
			_ = s.cfg.Blobs.Delete(ctx, id)
			return nil, err
		}
	}
	app := &store.App{
		ID: id, OwnerID: u.ID, ProjectID: p.ID, Name: req.Name, Status: store.StatusSpawning, Hardware: hw.Name,
		Domains: sp.Domains, Spec: specJSON, CodeDigest: req.CodeDigest, BundleSize: info.Size,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: sp.ExpiresAt,
	}
	if err := s.st.CreateApp(ctx, app); err != nil {
		_ = s.cfg.Blobs.Delete(ctx, id)
		if errors.Is(err, store.ErrConflict) {
			return nil, errf(ErrConflict, "domain %s is already used by a running app", sp.Domains[0])
		}
		return nil, err
	}
	s.mCreated.Inc()
	s.log.Info("app created", "app_id", id, "name", req.Name, "owner", u.Name, "bundle_bytes", info.Size)
	if err := s.spawn(ctx, app, sp, false); err != nil {
		if errors.Is(err, runner.ErrNoCapacity) || errors.Is(err, runner.ErrRuntime) {
			return nil, errf(ErrUnavailable, "%v", err)
		}
		return nil, err
	}
	s.Kick()
	return s.st.GetApp(ctx, id)
}

// spawn creates app's node and records it, unless another spawn of this
// process did meanwhile. With leftovers (the loop's spawn of an app whose
// earlier spawn never recorded a node: its replica died, or its claim
// lapsed) it first ends what that spawn may have created.
func (s *Service) spawn(ctx context.Context, app *store.App, spec config.Spec, leftovers bool) error {
	// Once begun, a spawn is finished (or fails) within SpawnTimeout, even if
	// the request or the leadership that began it ends: its claim lasts
	// longer (SpawnClaim), so no other replica spawns the app meanwhile.
	ctx, cancel := detached(ctx, s.cfg.SpawnTimeout)
	defer cancel()
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	if g := s.cfg.SpawnGuard; g != nil {
		// Until the node is recorded, a new leader's adoption would take
		// it for an orphan.
		release, err := g.Spawning(ctx)
		if err != nil {
			return fmt.Errorf("service: spawn the node of app %s: %w", app.ID, err)
		}
		defer release()
	}
	// The loop and CreateApp may both try: only the first spawns.
	cur, err := s.st.GetApp(ctx, app.ID)
	if err != nil {
		return err
	}
	if len(cur.Node) > 0 || cur.Status != store.StatusSpawning {
		return nil
	}
	hw, err := s.hardware(app.Hardware)
	if err != nil {
		return err
	}
	path, err := s.bundlePath(app.ID)
	if err != nil {
		return err
	}
	if leftovers {
		// Created but never recorded: no one else ends it. The claim
		// makes this replica the only one spawning the app now.
		if err := s.cfg.Runner.Stop(ctx, app.ID, nil); err != nil {
			return fmt.Errorf("service: end what an earlier spawn of app %s left: %w", app.ID, err)
		}
	}
	h, err := s.cfg.Runner.Spawn(ctx, app.ID, runner.SpawnSpec{App: spec, BundlePath: path, Hardware: hw, Tenant: app.OwnerID, CodeDigest: app.CodeDigest})
	if err != nil {
		s.transition(ctx, app.ID, []store.AppStatus{store.StatusSpawning}, store.StatusOnError, "spawn the node: "+err.Error())
		_ = s.cfg.Blobs.Delete(ctx, app.ID)
		return err
	}
	if err := s.st.SetAppNode(ctx, app.ID, h, s.cfg.Now().UTC()); err != nil {
		_ = s.cfg.Runner.Stop(ctx, app.ID, h)
		return err
	}
	return nil
}

func (s *Service) transition(ctx context.Context, id string, from []store.AppStatus, to store.AppStatus, msg string) bool {
	err := s.st.TransitionApp(ctx, id, from, to, msg, s.cfg.Now().UTC())
	if err != nil {
		if !errors.Is(err, store.ErrConflict) {
			s.log.Error("status transition", "app_id", id, "to", to, "err", err)
		}
		return false
	}
	s.mTransitions.WithLabelValues(string(to)).Inc()
	s.log.Info("app status", "app_id", id, "status", to, "reason", msg)
	return true
}

// App returns an app the caller may see. Another tenant's app is "not found".
func (s *Service) App(ctx context.Context, u *store.User, id string) (*store.App, error) {
	a, err := s.st.GetApp(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && a.OwnerID != u.ID && !u.Admin) {
		return nil, errf(ErrNotFound, "no app %s", id)
	}
	if err != nil {
		return nil, err
	}
	// An app on its way up is refreshed on read, so that a client polling
	// its status sees a transition as soon as the node made it.
	if a.Status == store.StatusSpawning || a.Status == store.StatusInitializing {
		s.reconcileOne(ctx, a)
		return s.st.GetApp(ctx, id)
	}
	return a, nil
}

// ListApps lists the caller's apps; all includes stopped ones.
func (s *Service) ListApps(ctx context.Context, u *store.User, name, status, project string, all bool) ([]store.App, error) {
	f, err := s.appFilter(ctx, u, name, status, project, all)
	if err != nil {
		return nil, err
	}
	return s.st.ListApps(ctx, f)
}

// appFilter is the store filter of ListApps and ListAppsPage.
func (s *Service) appFilter(ctx context.Context, u *store.User, name, status, project string, all bool) (store.AppFilter, error) {
	f := store.AppFilter{OwnerID: u.ID, Name: name}
	if status != "" {
		st := store.AppStatus(status)
		switch st {
		case store.StatusSpawning, store.StatusInitializing, store.StatusRunning, store.StatusStopped, store.StatusOnError:
		default:
			return f, errf(ErrInvalid, "unknown status %q (spawning, initializing, running, stopped, on_error)", status)
		}
		f.Statuses = []store.AppStatus{st}
	} else if !all {
		f.Statuses = store.ActiveStatuses
	}
	if project != "" {
		p, err := s.st.GetProjectByName(ctx, u.ID, project)
		if errors.Is(err, store.ErrNotFound) {
			return f, errf(ErrNotFound, "no project %q", project)
		} else if err != nil {
			return f, err
		}
		f.ProjectID = p.ID
	}
	return f, nil
}

// StopApp stops an app and ends its node.
func (s *Service) StopApp(ctx context.Context, u *store.User, id string) (*store.App, error) {
	a, err := s.App(ctx, u, id)
	if err != nil {
		return nil, err
	}
	if a.Status.Active() {
		s.stop(ctx, a, store.StatusStopped, "stopped by "+u.Name)
	}
	return s.st.GetApp(ctx, id)
}

func (s *Service) stop(ctx context.Context, a *store.App, to store.AppStatus, msg string) {
	if !s.transition(ctx, a.ID, store.ActiveStatuses, to, msg) {
		return
	}
	// The transition is won: this replica, and only it, ends the node and
	// the bundle, even if the request or the leadership ends meanwhile.
	ctx, cancel := detached(ctx, stopTimeout)
	defer cancel()
	if err := s.cfg.Runner.Stop(ctx, a.ID, a.Node); err != nil {
		s.log.Error("stop node", "app_id", a.ID, "err", err)
	}
	if err := s.cfg.Blobs.Delete(ctx, a.ID); err != nil {
		s.log.Error("delete bundle", "app_id", a.ID, "err", err)
	}
}

// Logs returns the app's node log.
func (s *Service) Logs(ctx context.Context, u *store.User, id string, tail int64, follow bool) (io.ReadCloser, error) {
	a, err := s.App(ctx, u, id)
	if err != nil {
		return nil, err
	}
	if follow && a.Status.Active() {
		return s.follow(ctx, u, func() (io.ReadCloser, error) { return s.cfg.Runner.Logs(ctx, a.ID, a.Node, tail, true) })
	}
	return s.cfg.Runner.Logs(ctx, a.ID, a.Node, tail, false)
}

// NodeState is what the runner sees of an active app's node: its
// certificate fingerprint and what it serves (zero for inactive apps).
func (s *Service) NodeState(ctx context.Context, a *store.App) runner.NodeState {
	if len(a.Node) == 0 || !a.Status.Active() {
		return runner.NodeState{}
	}
	st, err := s.cfg.Runner.Status(ctx, a.ID, a.Node)
	if err != nil {
		return runner.NodeState{}
	}
	return st
}

// ErrNoRoute is returned by Lookup for a name no active node serves.
var ErrNoRoute = errors.New("no active app serves this name")

// Lookup answers the router: the node and identity of an active app's domain
// (the digests only for tls_mode operator, where the router verifies the node).
func (s *Service) Lookup(ctx context.Context, serverName string) (router.Route, error) {
	a, err := s.st.AppByDomain(ctx, serverName)
	if errors.Is(err, store.ErrNotFound) {
		return router.Route{}, ErrNoRoute
	}
	if err != nil {
		return router.Route{}, err
	}
	if !a.Status.Active() || len(a.Node) == 0 {
		return router.Route{}, fmt.Errorf("%w: app %s has no node yet", ErrNoRoute, a.ID)
	}
	addr, err := s.cfg.Runner.Addr(a.ID, a.Node)
	if err != nil {
		return router.Route{}, err
	}
	var sp config.Spec
	if err := jsonUnmarshal(a.Spec, &sp); err != nil {
		return router.Route{}, fmt.Errorf("app %s: corrupt spec: %w", a.ID, err)
	}
	rt := router.Route{Addr: addr, TLSMode: sp.TLSMode, AppID: a.ID, Domain: strings.TrimSuffix(strings.ToLower(serverName), ".")}
	if sp.TLSMode == spec.TLSOperator {
		if rt.CodeDigest, err = hex.DecodeString(a.CodeDigest); err != nil {
			return router.Route{}, fmt.Errorf("app %s: corrupt code digest: %w", a.ID, err)
		}
		if rt.ConfigDigest, err = sp.Digest(); err != nil {
			return router.Route{}, fmt.Errorf("app %s: config digest: %w", a.ID, err)
		}
		if h, ok := strings.CutPrefix(sp.Runtime.Digest, "sha256:"); ok {
			rt.RuntimeDigest, _ = hex.DecodeString(h)
		}
	}
	return rt, nil
}

// Kick asks the loop to reconcile now.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Start adopts nodes that survived a restart, removes orphans, and returns;
// Run drives the loop.
//
// Start is for a backend alone on its store, before its API serves: it
// removes orphan bundles at once (no grace), which would race with another
// replica's uploads. A replica among several takes over in Lead instead.
func (s *Service) Start(ctx context.Context) error {
	if err := s.adopt(ctx); err != nil {
		return err
	}
	s.sweep(ctx)
	return s.sweepOrphans(ctx, 0)
}

// Run reconciles until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	sweep := time.NewTicker(s.cfg.SweepInterval)
	defer sweep.Stop()
	for {
		s.Reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		case <-sweep.C:
			s.sweep(ctx)
			s.logSweepOrphans(ctx)
		}
	}
}

// Reconcile drives every active app one step.
func (s *Service) Reconcile(ctx context.Context) {
	apps, err := s.st.ListApps(ctx, store.AppFilter{Statuses: store.ActiveStatuses})
	if err != nil {
		s.log.Error("reconcile: list apps", "err", err)
		return
	}
	counts := map[store.AppStatus]int{}
	for i := range apps {
		counts[apps[i].Status]++
		s.reconcileOne(ctx, &apps[i])
	}
	for _, st := range store.ActiveStatuses {
		s.mApps.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
}

// reconcileOne drives one active app one step: expiry, spawning, and the
// node's state.
func (s *Service) reconcileOne(ctx context.Context, a *store.App) {
	if !s.cfg.Now().Before(a.ExpiresAt) {
		s.stop(ctx, a, store.StatusStopped, "expired")
		return
	}
	if len(a.Node) == 0 {
		if a.Status == store.StatusSpawning {
			var spec config.Spec
			if err := jsonUnmarshal(a.Spec, &spec); err != nil {
				s.transition(ctx, a.ID, []store.AppStatus{a.Status}, store.StatusOnError, "corrupt spec")
				return
			}
			if !s.claimSpawn(ctx, a) {
				return
			}
			_ = s.spawn(ctx, a, spec, true)
		}
		return
	}
	st, err := s.cfg.Runner.Status(ctx, a.ID, a.Node)
	if err != nil {
		s.log.Error("reconcile: node status", "app_id", a.ID, "err", err)
		return
	}
	switch st.State {
	case nodeapi.StateWaiting, nodeapi.StateLaunching:
		if s.noKey(ctx, a, st.State) {
			return
		}
		s.transition(ctx, a.ID, []store.AppStatus{store.StatusSpawning}, store.StatusInitializing, "node waits for the owner's secrets")
	case nodeapi.StateRunning:
		s.transition(ctx, a.ID, []store.AppStatus{store.StatusSpawning, store.StatusInitializing}, store.StatusRunning, "app serves")
	case nodeapi.StateError, nodeapi.StateStopped, runner.StateExited, runner.StateLost:
		msg := st.Error
		if msg == "" {
			msg = "the node stopped"
		}
		s.stop(ctx, a, store.StatusOnError, msg)
	}
}

// RouterPort is the port of the router address, for URLs.
func (s *Service) RouterPort() string {
	_, port, err := net.SplitHostPort(s.cfg.RouterAddr)
	if err != nil {
		return ""
	}
	return port
}

// AppURL is the app's URL as users reach it through the router.
func (s *Service) AppURL(a *store.App) string {
	if len(a.Domains) == 0 {
		return ""
	}
	port := s.RouterPort()
	if port == "" || port == "443" {
		return "https://" + a.Domains[0] + "/"
	}
	return "https://" + a.Domains[0] + ":" + port + "/"
}

// RouterAddr is where clients reach the router.
func (s *Service) RouterAddr() string { return s.cfg.RouterAddr }
