package backend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/backend/runner"
)

func TestParseHardware(t *testing.T) {
	tests := []struct {
		name, in, err string
	}{
		{"the embedded entries", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim"}]`, ""},
		{"kubernetes scheduling", `[{"name":"sgx-4g","memory_mib":4096,"cores":2,"tee":"sgx","kubernetes":{
			"node_selector":{"mse.tee":"sgx"},"tolerations":[{"key":"mse.tee","operator":"Equal","value":"sgx","effect":"NoSchedule"}],
			"resources":{"sgx.intel.com/epc":"512Mi","sgx.intel.com/enclave":"1","sgx.intel.com/provision":"1"}}},
			{"name":"tdx-4g","memory_mib":4096,"cores":2,"tee":"tdx","kubernetes":{"runtime_class":"kata-qemu-tdx"}}]`, ""},
		{"unknown key", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim","gpu":1}]`, "unknown field"},
		{"unknown scheduling key", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim","kubernetes":{"runtimeclass":"x"}}]`, "unknown field"},
		{"empty", `[]`, "no entries"},
		{"not an array", `{"name":"1g"}`, "not a JSON array"},
		{"trailing data", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim"}] []`, "data after"},
		{"twice", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim"},{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim"}]`, "twice"},
		{"bad name", `[{"name":"a b","memory_mib":1024,"cores":1,"tee":"sim"}]`, "hardware name"},
		{"long name", `[{"name":"` + strings.Repeat("a", 17) + `","memory_mib":1024,"cores":1,"tee":"sim"}]`, "hardware name"},
		{"no cores", `[{"name":"1g","memory_mib":1024,"tee":"sim"}]`, "positive"},
		{"bad tee", `[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sgx2"}]`, "is not sim"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hw, err := ParseHardware([]byte(tt.in))
			if tt.err == "" {
				if err != nil || len(hw) == 0 {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("error %v; want %q", err, tt.err)
			}
		})
	}
}

func TestLoadHardwareBounds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "hw.json")
	if err := os.WriteFile(p, []byte("["+strings.Repeat(" ", maxHardwareFile)+"]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadHardware(p); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a huge file: %v", err)
	}
	if _, err := LoadHardware(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}

func TestCatalogTEE(t *testing.T) {
	if got := catalogTEE([]runner.Hardware{{TEE: "sgx"}, {TEE: "sgx"}}); got != "sgx" {
		t.Fatal(got)
	}
	if got := catalogTEE([]runner.Hardware{{TEE: "sgx"}, {TEE: "tdx"}}); got != "mixed" {
		t.Fatal(got)
	}
}

func FuzzParseHardware(f *testing.F) {
	f.Add([]byte(`[{"name":"1g","memory_mib":1024,"cores":1,"tee":"sim","kubernetes":{"runtime_class":"kata-qemu-tdx"}}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		hw, err := ParseHardware(b)
		if err == nil && (len(hw) == 0 || len(hw) > maxHardwareEntries) {
			t.Fatalf("accepted %d entries", len(hw))
		}
	})
}
