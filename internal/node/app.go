package node

import (
	"github.com/mse-in-go/mse/internal/apphost"

	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

type runningApp struct {
	n       *Node
	cmd     *exec.Cmd
	stdin   io.WriteCloser // a warm host's: "start" goes there
	port    int
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// codeDir is where stage 2 unpacks the app's code.
func (n *Node) codeDir() string { return filepath.Join(n.cfg.WorkDir, "code") }

// appPaths are where the app's secrets and HOME live in a work directory.
func appPaths(workDir string) (secrets, sealed, home string) {
	return filepath.Join(workDir, "secrets.json"), filepath.Join(workDir, "sealed_secrets.json"), filepath.Join(workDir, "home")
}

// startApp starts the app's process. With warm (python_application only),
// it starts the Python host before any code exists: the interpreter and the
// runtime's libraries load while the node waits for the owner's key, and
// the host goes on only when release writes its start line on its stdin.
func (n *Node) startApp(warm bool) (*runningApp, error) {
	cfg := n.cfg
	var a *runningApp
	var err error
	if cfg.Spec.PythonApplication != "" {
		a, err = startPythonHost(cfg.Python, cfg.WorkDir, cfg.Spec.AppID, warm, []string{cfg.Spec.PythonApplication, cfg.Spec.Runtime.Kind})
	} else {
		argv := cfg.Spec.Entrypoint
		prog, perr := apphost.ResolveProgram(argv[0], n.codeDir(), "/")
		if perr != nil {
			return nil, fmt.Errorf("node: %w", perr)
		}
		a, err = startProcess(cfg.WorkDir, n.codeDir(), cfg.Spec.AppID, false, prog, argv[1:]...)
	}
	if err != nil {
		return nil, err
	}
	a.n = n
	if warm {
		n.log.Info("app host started, waiting for the code", "pid", a.cmd.Process.Pid, "port", a.port)
	} else {
		n.log.Info("app started", "pid", a.cmd.Process.Pid, "port", a.port)
	}
	return a, nil
}

// startPythonHost starts the runtime's interpreter on the app host in
// workDir; with wait it waits for its start line (args may then be empty:
// the start line names the app).
func startPythonHost(python, workDir, appID string, wait bool, args []string) (*runningApp, error) {
	host := filepath.Join(workDir, "mse_host.py")
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fmt.Errorf("node: work directory: %w", err)
	}
	if err := os.WriteFile(host, []byte(apphost.PythonHost), 0o500); err != nil {
		return nil, fmt.Errorf("node: write the app host: %w", err)
	}
	// The host runs in workDir and moves to the code directory itself (which
	// does not exist yet while it waits).
	return startProcess(workDir, workDir, appID, wait, python, append([]string{host}, args...)...)
}

// startProcess starts prog in dir, in its own process group, with the app's
// environment (paths under workDir, a free loopback port).
func startProcess(workDir, dir, appID string, wait bool, prog string, args ...string) (*runningApp, error) {
	codeDir := filepath.Join(workDir, "code")
	secretsPath, sealedPath, home := appPaths(workDir)
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("node: HOME: %w", err)
	}
	port, err := apphost.FreePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	// MSE's environment: PORT, HOME (writable), SECRETS_PATH,
	// SEALED_SECRETS_PATH, MODULE_PATH. PATH names the runtime's directories.
	cmd.Env = apphost.Env{Port: port, Home: home, Tmp: workDir, Secrets: secretsPath, SealedSecrets: sealedPath,
		Code: codeDir, AppID: appID}.List()
	a := &runningApp{cmd: cmd, port: port, exited: make(chan struct{})}
	if wait {
		cmd.Env = append(cmd.Env, "MSE_HOST_WAIT=1")
		if a.stdin, err = cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node: start the app (%s): %w", cmd.Path, err)
	}
	go func() { a.waitErr = cmd.Wait(); close(a.exited) }()
	return a, nil
}

// release lets a warm host go on: the code and secrets are in place.
func (a *runningApp) release() error {
	if a.stdin == nil {
		return nil
	}
	sp := a.n.cfg.Spec
	_, err := io.WriteString(a.stdin, apphost.StartLine(sp.PythonApplication, sp.Runtime.Kind, sp.AppID))
	a.stdin.Close()
	a.stdin = nil
	return err
}

// alive reports whether the process has not exited.
func (a *runningApp) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// launch writes the secrets and starts the app from the code stage 2
// unpacked (releasing the warm host when there is one), then waits until it
// answers its health check.
func (n *Node) launch(ctx context.Context, in *intake, warm *runningApp) (_ *runningApp, err error) {
	cfg := n.cfg
	defer func() {
		if err != nil && warm != nil {
			warm.stop() // once: a no-op when the health loop stopped it already
		}
	}()
	secretsPath, sealedPath, _ := appPaths(n.cfg.WorkDir)
	secrets := in.appSecrets
	if len(secrets) == 0 {
		secrets = []byte("{}")
	}
	if err := os.WriteFile(secretsPath, secrets, 0o600); err != nil {
		return nil, fmt.Errorf("node: write secrets: %w", err)
	}
	sealedSecrets := in.sealedSecrets
	if len(sealedSecrets) == 0 {
		sealedSecrets = []byte("{}")
	}
	if err := os.WriteFile(sealedPath, sealedSecrets, 0o600); err != nil {
		return nil, fmt.Errorf("node: write sealed secrets: %w", err)
	}
	a := warm
	if a != nil && (!a.alive() || a.release() != nil) {
		n.log.Warn("the warm app host ended early; starting the app cold", "err", exitString(a.waitErr))
		a.stop()
		a = nil
	}
	if a == nil {
		if a, err = n.startApp(false); err != nil {
			return nil, err
		}
	} else {
		n.log.Info("app started", "pid", a.cmd.Process.Pid, "port", a.port, "warm", true)
	}
	port := a.port

	deadline := time.Now().Add(cfg.HealthTimeout)
	var lastErr error
	for {
		// Each check is bounded by the deadline too, so that an app that
		// accepts connections but never answers fails within HealthTimeout.
		hctx, cancel := context.WithDeadline(ctx, deadline)
		lastErr = a.health(hctx)
		cancel()
		if lastErr == nil {
			return a, nil
		}
		select {
		case <-a.exited:
			a.stop() // the group may hold children the app left behind
			return nil, fmt.Errorf("node: the app exited before it answered its health check: %v", exitString(a.waitErr))
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(healthPoll(time.Until(deadline), cfg.HealthTimeout)):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("node: the app did not answer its health check within %s (start_timeout): %v; it must listen on 127.0.0.1:$PORT (PORT=%d)", cfg.HealthTimeout, lastErr, port)
		}
	}
}

// healthPoll polls fast while the app starts (most answer within a second),
// then more slowly.
func healthPoll(left, total time.Duration) time.Duration {
	if total-left < 2*time.Second {
		return 25 * time.Millisecond
	}
	return 200 * time.Millisecond
}

var healthClient = &http.Client{Timeout: 5 * time.Second}

func (a *runningApp) health(ctx context.Context) error {
	path := a.n.cfg.Spec.HealthcheckEndpoint
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", a.port, path), nil)
	if err != nil {
		return err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	// Readiness is the health check: a 2xx or 3xx on healthcheck_endpoint.
	// What "/" answers does not matter (an API may answer 401 there).
	if !apphost.Ready(resp.StatusCode) {
		return fmt.Errorf("health check GET %s answered HTTP %d; healthcheck_endpoint must answer 2xx when the app is ready", path, resp.StatusCode)
	}
	return nil
}

func (a *runningApp) handler() http.Handler {
	target := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", a.port)}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "the app did not answer"})
		},
	}
}

// monitor watches the app until ctx ends, it exits, health fails three times
// in a row, or the app expires.
func (a *runningApp) monitor(ctx context.Context, expired <-chan time.Time, serveErr <-chan error) error {
	t := time.NewTicker(a.n.cfg.HealthInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expired:
			return ErrExpired
		case err := <-serveErr:
			return fmt.Errorf("node: serve: %w", err)
		case <-a.exited:
			return fmt.Errorf("node: the app exited: %v", exitString(a.waitErr))
		case <-t.C:
			if err := a.health(ctx); err != nil {
				failures++
				a.n.log.Warn("health check failed", "err", err, "consecutive", failures)
				if failures >= 3 {
					return fmt.Errorf("node: the app failed its health check 3 times in a row: %v", err)
				}
			} else {
				failures = 0
			}
		}
	}
}

// stop terminates the app's process group: SIGTERM, then SIGKILL after 5s.
func (a *runningApp) stop() {
	a.once.Do(func() {
		pid := a.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-a.exited
		}
		// Children the app left in its group do not outlive it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	})
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	return err.Error()
}
