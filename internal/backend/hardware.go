package backend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
)

// Bounds of a hardware catalog file.
const (
	maxHardwareFile    = 1 << 20
	maxHardwareEntries = 256
)

// hardwareName is what mse.toml's cloud.hardware accepts (config), at most
// 16 characters.
var hardwareName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$`)

// LoadHardware reads a hardware catalog: a JSON array of runner.Hardware
// (docs/kubernetes.md "Hardware catalog"). Unknown keys are errors.
func LoadHardware(path string) ([]runner.Hardware, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hardware catalog: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHardwareFile+1))
	if err != nil {
		return nil, fmt.Errorf("hardware catalog %s: %w", path, err)
	}
	if len(b) > maxHardwareFile {
		return nil, fmt.Errorf("hardware catalog %s is larger than %d bytes", path, maxHardwareFile)
	}
	hw, err := ParseHardware(b)
	if err != nil {
		return nil, fmt.Errorf("hardware catalog %s: %w", path, err)
	}
	return hw, nil
}

// ParseHardware parses and checks a hardware catalog's JSON.
func ParseHardware(b []byte) ([]runner.Hardware, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var hw []runner.Hardware
	if err := dec.Decode(&hw); err != nil {
		return nil, fmt.Errorf("not a JSON array of hardware entries: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data after the JSON array")
	}
	if len(hw) == 0 {
		return nil, errors.New("no entries")
	}
	if len(hw) > maxHardwareEntries {
		return nil, fmt.Errorf("%d entries; at most %d", len(hw), maxHardwareEntries)
	}
	seen := map[string]bool{}
	for _, h := range hw {
		if !hardwareName.MatchString(h.Name) {
			return nil, fmt.Errorf("hardware name %q: use 1 to 16 letters, digits, '.', '_' and '-'", h.Name)
		}
		if seen[h.Name] {
			return nil, fmt.Errorf("hardware %q is listed twice", h.Name)
		}
		seen[h.Name] = true
		if h.MemoryMiB <= 0 || h.Cores <= 0 {
			return nil, fmt.Errorf("hardware %q: memory_mib and cores must be positive", h.Name)
		}
		switch h.TEE {
		case attest.TypeSim, attest.TypeSGX, attest.TypeTDX, attest.TypeSEVSNP:
		default:
			return nil, fmt.Errorf("hardware %q: tee %q is not sim, sgx, tdx or sev-snp", h.Name, h.TEE)
		}
	}
	return hw, nil
}

// catalogTEE is the TEE type shown to clients: the catalog's, or "mixed".
func catalogTEE(hw []runner.Hardware) string {
	tee := ""
	for _, h := range hw {
		if tee != "" && h.TEE != tee {
			return "mixed"
		}
		tee = h.TEE
	}
	return tee
}
