package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/mse-in-go/mse/internal/atomicfile"
)

// configDir is where the CLI keeps its login and app contexts: $MSE_CONFIG_DIR,
// or the user config dir + "/mse".
func configDir() (string, error) {
	if d := os.Getenv("MSE_CONFIG_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no user config directory (set MSE_CONFIG_DIR): %w", err)
	}
	return filepath.Join(d, "mse"), nil
}

// Login is the saved backend login.
type Login struct {
	URL   string `toml:"url"`
	Token string `toml:"token"`
	// CACert is a PEM file of the CA to trust for an https:// backend whose
	// certificate is not publicly trusted.
	CACert string `toml:"cacert,omitempty"`
}

func loginPath() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "login.toml"), nil
}

func loadLogin() (*Login, error) {
	if url, tok := os.Getenv("MSE_BACKEND_URL"), os.Getenv("MSE_TOKEN"); url != "" && tok != "" {
		return &Login{URL: url, Token: tok}, nil
	}
	p, err := loginPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, errors.New("not logged in: run `mse cloud login --token TOKEN [--url URL]` first")
	}
	if err != nil {
		return nil, err
	}
	var l Login
	if err := toml.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v): run `mse cloud login` again", p, err)
	}
	if env := os.Getenv("MSE_BACKEND_URL"); env != "" {
		l.URL = env
	}
	return &l, nil
}

func saveLogin(l *Login) (string, error) {
	p, err := loginPath()
	if err != nil {
		return "", err
	}
	b, err := toml.Marshal(l)
	if err != nil {
		return "", err
	}
	return p, writePrivate(p, b)
}

// writePrivate writes a file readable only by the user, atomically,
// creating its directory (0700) if needed.
func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// AppContext is what deploy saves about an app: enough to verify it again,
// and the code key (which is why it is 0600).
type AppContext struct {
	Version    int      `toml:"version"`
	AppID      string   `toml:"app_id"`
	Name       string   `toml:"name"`
	BackendURL string   `toml:"backend_url"`
	Domains    []string `toml:"domains"`
	URL        string   `toml:"url"`
	RouterAddr string   `toml:"router_addr"`
	TLSMode    string   `toml:"tls_mode"`
	// ACMEDirectory is the CA of tls_mode acme (the config digest covers it).
	ACMEDirectory string    `toml:"acme_directory,omitempty"`
	CodeKey       string    `toml:"code_key"`
	CodeDigest    string    `toml:"code_digest"`
	ConfigDigest  string    `toml:"config_digest"`
	Fingerprint   string    `toml:"certificate_sha256"`
	TEE           string    `toml:"tee"`
	Measurement   string    `toml:"measurement"`
	Signer        string    `toml:"signer"`
	Simulated     bool      `toml:"simulated"`
	Verified      bool      `toml:"verified"`
	Certificate   string    `toml:"certificate"` // PEM of the verified RA-TLS certificate
	ExpiresAt     time.Time `toml:"expires_at"`
	CreatedAt     time.Time `toml:"created_at"`
}

var idRE = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

func contextsDir() (string, error) {
	d, err := configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "contexts"), nil
}

func contextPaths(id string) (toml, pem string, err error) {
	if !idRE.MatchString(id) {
		return "", "", fmt.Errorf("invalid app id %q", id)
	}
	d, err := contextsDir()
	if err != nil {
		return "", "", err
	}
	return filepath.Join(d, id+".toml"), filepath.Join(d, id+".pem"), nil
}

func saveContext(c *AppContext) (string, string, error) {
	tp, pp, err := contextPaths(c.AppID)
	if err != nil {
		return "", "", err
	}
	c.Version = 1
	b, err := toml.Marshal(c)
	if err != nil {
		return "", "", err
	}
	if err := writePrivate(tp, b); err != nil {
		return "", "", err
	}
	if err := writePrivate(pp, []byte(c.Certificate)); err != nil {
		return "", "", err
	}
	return tp, pp, nil
}

func readContextFile(path string) (*AppContext, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c AppContext
	dec := toml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("context %s does not parse: %w", path, err)
	}
	if c.AppID == "" {
		return nil, fmt.Errorf("context %s has no app_id", path)
	}
	return &c, nil
}

func loadContext(id string) (*AppContext, string, error) {
	tp, _, err := contextPaths(id)
	if err != nil {
		return nil, "", err
	}
	c, err := readContextFile(tp)
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("no saved context for app %s (see `mse cloud context --list`)", id)
	}
	return c, tp, err
}

func listContexts() ([]AppContext, error) {
	d, err := contextsDir()
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(d)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []AppContext
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".toml") {
			continue
		}
		c, err := readContextFile(filepath.Join(d, e.Name()))
		if err != nil {
			continue
		}
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, nil
}

func removeContext(id string) error {
	tp, pp, err := contextPaths(id)
	if err != nil {
		return err
	}
	if err := os.Remove(tp); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("no saved context for app %s", id)
		}
		return err
	}
	_ = os.Remove(pp)
	return nil
}
