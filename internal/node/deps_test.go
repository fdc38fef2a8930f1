package node

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// mse-node is the trusted computing base: everything it links runs inside the
// enclave, beside the owner's code and secrets. It links only what it
// executes. These lists are the whole set of non-standard code it may link;
// each entry says why the node needs it.
//
// A new entry needs a reason the node executes that code. Code only the owner
// or the operator runs (packing, mse.toml, policy files, runtime images, the
// CLI, the backend) belongs in a package the node does not import: split the
// package instead, as internal/bundle/pack, internal/spec and
// internal/attest/policyfile were split off.

const nodeCmd = "github.com/mse-in-go/mse/cmd/mse-node"

// nodeModules: third-party modules, by module path.
var nodeModules = map[string]string{
	"github.com/fxamacker/cbor/v2":      "CBOR of the claims and the RA-TLS evidence extension, and of the config digest",
	"github.com/x448/float16":           "required by fxamacker/cbor",
	"github.com/tink-crypto/tink-go/v2": "the bundle's streaming AEAD (AES256_GCM_HKDF, internal/bundle)",
	"google.golang.org/protobuf":        "required by tink-go (its key and parameter protos)",
	"golang.org/x/crypto":               "required by tink-go (hkdf, chacha20poly1305, curve25519)",
	"golang.org/x/sys":                  "required by golang.org/x/crypto (cpu feature detection)",
}

// nodePackages: this module's packages, by import path.
var nodePackages = map[string]string{
	"github.com/mse-in-go/mse/cmd/mse-node":               "the program",
	"github.com/mse-in-go/mse/internal/node":              "the node runtime",
	"github.com/mse-in-go/mse/internal/spec":              "what the node is told to run, the config digest, owner certificate and key parsers",
	"github.com/mse-in-go/mse/internal/bundle":            "code keys, decryption and unpacking of the bundle",
	"github.com/mse-in-go/mse/internal/ratls":             "the RA-TLS certificate the node serves",
	"github.com/mse-in-go/mse/internal/attest":            "claims and the Issuer interface",
	"github.com/mse-in-go/mse/internal/attest/sim":        "the sim issuer (--tee sim)",
	"github.com/mse-in-go/mse/internal/attest/tsm":        "the configfs-tsm issuer (--tee tdx, sev-snp)",
	"github.com/mse-in-go/mse/internal/attest/tdx/abi":    "imported by attest/tsm: the TDX quote layout, to check what configfs-tsm answers",
	"github.com/mse-in-go/mse/internal/attest/snp/abi":    "imported by attest/tsm: the SEV-SNP report layout, to check what configfs-tsm answers",
	"github.com/mse-in-go/mse/internal/attest/sgx":        "the Gramine issuer (--tee sgx)",
	"github.com/mse-in-go/mse/internal/attest/sgx/abi":    "imported by attest/sgx (quote layout)",
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs":    "imported by attest/sgx (its verifier half; the node runs only the issuer)",
	"github.com/mse-in-go/mse/internal/attest/sgx/verify": "imported by attest/sgx (its verifier half; the node runs only the issuer)",
	"github.com/mse-in-go/mse/internal/sealed":            "opening sealed secrets",
	"github.com/mse-in-go/mse/internal/nodeapi":           "the stage-2 request and answer types",
	"github.com/mse-in-go/mse/internal/apphost":           "starting the app in its runtime",
	"github.com/mse-in-go/mse/internal/runtimes":          "runtime digests and kinds of the spec",
	"github.com/mse-in-go/mse/internal/atomicfile":        "writing the node's files",
	"github.com/mse-in-go/mse/internal/acme":              "tls_mode acme: obtaining and renewing the certificate for the enclave key",
}

// nodeNever: packages (and everything below them) the node must not link
// even if someone adds them to the lists above: the owner's and the
// operator's side.
var nodeNever = []string{
	"github.com/mse-in-go/mse/internal/config",            // mse.toml (go-toml); the node uses internal/spec
	"github.com/mse-in-go/mse/internal/bundle/pack",       // packing and .mseignore (go-git)
	"github.com/mse-in-go/mse/internal/attest/policyfile", // policy files (go-toml)
	"github.com/mse-in-go/mse/internal/runtimes/image",    // building and reading runtime images
	"github.com/mse-in-go/mse/internal/cli",
	"github.com/mse-in-go/mse/internal/backend",
	"github.com/mse-in-go/mse/internal/client",
}

// nodeDep is one package mse-node links.
type nodeDep struct {
	path, module string
	std          bool
	imports      []string
}

func listNodeDeps(t *testing.T) map[string]nodeDep {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f",
		"{{.ImportPath}}\t{{.Standard}}\t{{with .Module}}{{.Path}}{{end}}\t{{join .Imports \" \"}}", nodeCmd).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := map[string]nodeDep{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		deps[f[0]] = nodeDep{path: f[0], std: f[1] == "true", module: f[2], imports: strings.Fields(f[3])}
	}
	if _, ok := deps[nodeCmd]; !ok {
		t.Fatalf("go list did not list %s", nodeCmd)
	}
	return deps
}

// importChain returns how mse-node reaches pkg: "cmd/mse-node -> ... -> pkg".
func importChain(deps map[string]nodeDep, pkg string) string {
	prev := map[string]string{nodeCmd: ""}
	queue := []string{nodeCmd}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == pkg {
			break
		}
		for _, q := range deps[p].imports {
			if _, seen := prev[q]; !seen {
				prev[q] = p
				queue = append(queue, q)
			}
		}
	}
	if _, ok := prev[pkg]; !ok {
		return pkg
	}
	var chain []string
	for p := pkg; p != ""; p = prev[p] {
		chain = append(chain, p)
	}
	slices.Reverse(chain)
	return strings.Join(chain, " -> ")
}

// TestNodeLinksOnlyAllowlisted checks the trusted computing base against the
// allowlists: every non-standard package mse-node links is on them, and every
// entry is still linked (the lists stay exact).
func TestNodeLinksOnlyAllowlisted(t *testing.T) {
	deps := listNodeDeps(t)
	usedModules, usedPackages := map[string]bool{}, map[string]bool{}
	newModules := map[string][]string{} // module -> its packages mse-node links
	var paths []string
	for p := range deps {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	for _, p := range paths {
		d := deps[p]
		switch {
		case d.std:
		case d.module == "github.com/mse-in-go/mse":
			usedPackages[p] = true
			if _, ok := nodePackages[p]; !ok {
				t.Errorf("mse-node now links %s, which is not in nodePackages.\n"+
					"  imported through: %s\n"+
					"  Everything mse-node links runs in the enclave. If the node executes this package, add it to "+
					"nodePackages in internal/node/deps_test.go with the reason; if only the owner or the operator "+
					"runs it, move it to a package the node does not import.",
					p, importChain(deps, p))
			}
		default:
			usedModules[d.module] = true
			if _, ok := nodeModules[d.module]; !ok {
				newModules[d.module] = append(newModules[d.module], p)
			}
		}
	}
	var mods []string
	for m := range newModules {
		mods = append(mods, m)
	}
	slices.Sort(mods)
	for _, m := range mods {
		pkgs := newModules[m]
		t.Errorf("mse-node now links module %s, which is not in nodeModules: %d package(s), %s.\n"+
			"  imported through: %s\n"+
			"  Everything mse-node links runs in the enclave. If the node executes this code, add the module to "+
			"nodeModules in internal/node/deps_test.go with the reason the node needs it, and give that reason and "+
			"the change in the linked package count and binary size (docs/benchmarks.md) in the commit; otherwise "+
			"keep the import in a package the node does not import.",
			m, len(pkgs), strings.Join(pkgs, ", "), importChain(deps, pkgs[0]))
	}
	for _, m := range sortedKeys(nodeModules) {
		if !usedModules[m] {
			t.Errorf("mse-node no longer links module %s: remove it from nodeModules in internal/node/deps_test.go", m)
		}
	}
	for _, p := range sortedKeys(nodePackages) {
		if !usedPackages[p] {
			t.Errorf("mse-node no longer links %s: remove it from nodePackages in internal/node/deps_test.go", p)
		}
	}
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestNodeDoesNotLinkOwnerOrOperatorCode: the owner's side (mse.toml,
// packing, policy files, runtime images, the CLI) and the operator's (the
// backend and its client) never enter the enclave.
func TestNodeDoesNotLinkOwnerOrOperatorCode(t *testing.T) {
	deps := listNodeDeps(t)
	for p := range deps {
		for _, never := range nodeNever {
			if p == never || strings.HasPrefix(p, never+"/") {
				t.Errorf("mse-node links %s, which must stay out of the enclave\n  imported through: %s", p, importChain(deps, p))
			}
		}
	}
}
