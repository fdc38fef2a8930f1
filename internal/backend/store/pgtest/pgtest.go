// Package pgtest gives tests a fresh, empty PostgreSQL database.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		url := pgtest.URL(t) // a new database, dropped when t ends
//		...
//	}
//
// Where the server comes from:
//
//   - MSE_TEST_POSTGRES_URL set (e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable):
//     that server; each URL call creates a uniquely named database on it
//     (the role needs CREATEDB) and drops it in t.Cleanup.
//   - otherwise: one throwaway cluster per test binary, started on first use
//     from the installed PostgreSQL binaries (Debian: /usr/lib/postgresql/*/bin;
//     else pg_config --bindir, else initdb on PATH; or MSE_TEST_PG_BINDIR): initdb into a temporary
//     directory (as the "postgres" user when running as root, since initdb
//     refuses root), then postgres listening on 127.0.0.1 on a free port, its
//     unix socket in the same directory, fsync off. Main stops it and removes
//     the directory when the tests end; should the test binary die first
//     (panic, timeout, kill), the kernel sends the server SIGINT (parent-death
//     signal), so no postgres process outlives `go test`.
//   - no PostgreSQL installed: the test is skipped, loudly; with CI=true it
//     fails instead, saying how to install it (apt-get install postgresql).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// EnvURL names the environment variable with an existing server's URL.
const EnvURL = "MSE_TEST_POSTGRES_URL"

// EnvBinDir names an optional environment variable: the directory holding
// initdb and postgres, when they are not where Debian puts them.
const EnvBinDir = "MSE_TEST_PG_BINDIR"

// ErrNotInstalled: no PostgreSQL server binaries were found.
var ErrNotInstalled = errors.New("PostgreSQL server binaries (initdb, postgres) not found")

const installHint = "install them with `apt-get install -y postgresql` (Debian/Ubuntu), " +
	"or point " + EnvURL + " at a server (postgres://user@host:port/db?sslmode=disable; the role needs CREATEDB)"

var (
	once    sync.Once
	srv     *server
	srvErr  error
	dbCount atomic.Int64
)

// URL returns the URL of a new, empty database, dropped when t ends. It
// skips t (fails it when CI=true) if no PostgreSQL is available.
func URL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvURL)
	if admin == "" {
		once.Do(func() {
			srv, srvErr = start()
			if errors.Is(srvErr, ErrNotInstalled) {
				fmt.Fprintf(os.Stderr, "\n*** pgtest: %v: PostgreSQL tests are SKIPPED (FAIL when CI=true).\n*** %s.\n\n", srvErr, installHint)
			}
		})
		if errors.Is(srvErr, ErrNotInstalled) {
			ciskip.Missing(t, "pgtest: a PostgreSQL test: %v; to run it, %s", srvErr, installHint)
		}
		if srvErr != nil {
			t.Fatalf("pgtest: starting a throwaway PostgreSQL: %v", srvErr)
		}
		admin = srv.url
	}
	name := fmt.Sprintf("mse_test_%d_%d_%s", os.Getpid(), dbCount.Add(1), randHex(4))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, admin, `CREATE DATABASE "`+name+`"`); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, admin, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// Main runs the tests and then stops the throwaway server, if one was
// started: call it from TestMain. alsoStop stop the other components the
// tests may have started, first (testenv.StopKube, say).
func Main(m *testing.M, alsoStop ...func()) {
	code := m.Run()
	for _, stop := range alsoStop {
		stop()
	}
	if err := Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Stop stops the throwaway server (if one runs) and removes its directory.
func Stop() error {
	if srv == nil {
		return nil
	}
	s := srv
	srv, srvErr = nil, errors.New("pgtest: server stopped")
	return s.stop()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func adminExec(ctx context.Context, admin, sql string) error {
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// withDatabase returns the admin connection string pointing at database name.
func withDatabase(admin, name string) (string, error) {
	if strings.HasPrefix(admin, "postgres://") || strings.HasPrefix(admin, "postgresql://") {
		u, err := url.Parse(admin)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	return admin + " dbname=" + name, nil // keyword/value form: the last dbname wins
}

// ---- the throwaway cluster

type server struct {
	dir  string
	url  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited
	werr error
	// release lets the goroutine (and OS thread) that started the server end;
	// the parent-death signal is tied to that thread.
	release chan struct{}
}

// binDir finds the directory holding initdb and postgres.
func binDir() (string, error) {
	if d := os.Getenv(EnvBinDir); d != "" {
		if hasServer(d) {
			return d, nil
		}
		return "", fmt.Errorf("%w in %s=%s", ErrNotInstalled, EnvBinDir, d)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { // highest major version first
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if hasServer(d) {
			return d, nil
		}
	}
	return "", ErrNotInstalled
}

// hasServer reports whether d holds initdb and postgres.
func hasServer(d string) bool {
	return isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres"))
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// credential: when running as root, the server runs as "postgres"; nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root and there is no \"postgres\" user to run initdb as (initdb refuses root): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func start() (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	sweep()
	dir, err := os.MkdirTemp("", "mse-pgtest-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"--no-sync", "--encoding=UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	var lastErr error
	for range 5 { // a free port can be taken between probing and binding
		s, err := launch(bin, dir, data, cred)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func launch(bin, dir, data string, cred *syscall.Credential) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=64MB")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,           // a ^C at the terminal is for go test; we stop the server ourselves
		Pdeathsig:  syscall.SIGINT, // fast shutdown if the test binary dies first
	}
	s := &server{
		dir:     dir,
		url:     fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		cmd:     cmd,
		done:    make(chan struct{}),
		release: make(chan struct{}),
	}
	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that forked the
		// child exits: keep this goroutine, locked to its thread, alive
		// for as long as the server runs.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.werr = cmd.Wait()
		close(s.done)
		<-s.release
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, s.url)
		cancel()
		if err == nil {
			c.Close(context.Background())
			return s, nil
		}
		select {
		case <-s.done:
			close(s.release)
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited (%v):\n%s", s.werr, log)
		default:
		}
		if time.Now().After(deadline) {
			s.stop()
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres not ready after 60s: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop: SIGINT (fast shutdown), SIGQUIT then SIGKILL if it lingers; then
// the directory is removed.
func (s *server) stop() error {
	defer func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
	}()
	var err error
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		s.cmd.Process.Signal(sig)
		select {
		case <-s.done:
			return os.RemoveAll(s.dir)
		case <-time.After(10 * time.Second):
			err = fmt.Errorf("postgres (pid %d) ignored %v", s.cmd.Process.Pid, sig)
		}
	}
	return err
}

// sweep removes the directories of throwaway clusters whose test binary died
// without cleaning up (the server itself was stopped by the parent-death
// signal): older than an hour and without a live postmaster.
func sweep() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mse-pgtest-*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || time.Since(fi.ModTime()) < time.Hour {
			continue
		}
		if pid, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			first, _, _ := strings.Cut(string(pid), "\n")
			if n, err := strconv.Atoi(strings.TrimSpace(first)); err == nil {
				if err := syscall.Kill(n, 0); err == nil || errors.Is(err, syscall.EPERM) {
					continue // alive (or the pid was reused: leave it)
				}
			}
		}
		os.RemoveAll(d)
	}
}
