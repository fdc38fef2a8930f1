package cli

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/mse-in-go/mse/internal/config"
)

// The commands deploy prints are meant to be pasted into a shell (and
// scripts/demo.sh evals them), so every value in them is validated first
// and then quoted: what the operator's backend returns can at worst make a
// command fail, never run another one.

// shellQuote returns s as one POSIX shell word: unchanged when every byte is
// in a set that no shell reads as syntax, else in single quotes, each single
// quote inside written as quote, backslash, quote, quote.
func shellQuote(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !shellSafe(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellSafe is the set of characters left unquoted (as Python's shlex.quote):
// letters, digits and @%+=:,./_- . Nothing else, not even '~' (expanded at
// the start of a word) or '[' (a glob).
func shellSafe(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("@%+=:,./_-", r)
}

// shellJoin quotes each word and joins them with spaces.
func shellJoin(words ...string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// splitRouterAddr checks a router address from the backend (HOST:PORT, the
// host an IP address or a host name, the port 1-65535) and splits it.
func splitRouterAddr(addr string) (host, port string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("the backend gave the router address %q, which %s; refusing to use it (report this to the operator)", sanitize(addr), why)
	}
	if addr == "" {
		return bad("is empty")
	}
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return bad("is not HOST:PORT")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return bad("has no port from 1 to 65535")
	}
	if net.ParseIP(host) != nil {
		return host, port, nil
	}
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(host) > 253 {
		return bad("has a host name longer than 253 characters")
	}
	for _, l := range labels {
		if !hostLabelRE.MatchString(l) {
			return bad("has a host that is neither an IP address nor a host name")
		}
	}
	return host, port, nil
}

// checkDomain checks a domain from the backend.
func checkDomain(appID, d string) error {
	if err := config.ValidateDomain(d); err != nil {
		return fmt.Errorf("the backend assigned app %s a bad domain: %v; refusing to continue (report this to the operator)", appID, sanitize(err.Error()))
	}
	return nil
}

// appURL is where users reach the app: the verified domain, on the router's
// port (left out when it is 443). It is never the backend's own `url`
// field, which the node does not attest.
func appURL(domain, routerAddr string) (string, error) {
	if err := config.ValidateDomain(domain); err != nil {
		return "", err
	}
	_, port, err := splitRouterAddr(routerAddr)
	if err != nil {
		return "", err
	}
	if port == "443" {
		return "https://" + domain + "/", nil
	}
	return "https://" + net.JoinHostPort(domain, port) + "/", nil
}

// curlLine is a curl command that works as printed: --resolve sends the
// app's domain to the router; --cacert trusts exactly the verified RA-TLS
// certificate (scenario 1), while the owner's certificate (scenario 2) is
// trusted by the system's roots.
func curlLine(domain, routerAddr, certPath, mode string) (string, error) {
	u, err := appURL(domain, routerAddr)
	if err != nil {
		return "", err
	}
	host, port, err := splitRouterAddr(routerAddr)
	if err != nil {
		return "", err
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // curl wants IPv6 addresses in brackets
	}
	words := []string{"curl"}
	if mode != config.TLSOwner {
		words = append(words, "--cacert", certPath)
	}
	words = append(words, "--resolve", domain+":"+port+":"+host, u)
	return shellJoin(words...), nil
}

// verifyLine is an `mse cloud verify` command that works as printed.
func verifyLine(domain, routerAddr, fingerprint string, simulated bool) (string, error) {
	if err := config.ValidateDomain(domain); err != nil {
		return "", err
	}
	_, port, err := splitRouterAddr(routerAddr)
	if err != nil {
		return "", err
	}
	words := []string{"mse", "cloud", "verify", domain}
	if port != "443" {
		words = append(words, "--addr", routerAddr)
	}
	words = append(words, "--fingerprint", fingerprint)
	if simulated {
		words = append(words, "--simulation")
	}
	return shellJoin(words...), nil
}
