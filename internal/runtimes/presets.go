package runtimes

// Preset is a runtime recipe the operator can build by name
// (`mse-backend runtime build flask`): Debian packages and the server kind.
type Preset struct {
	Name     string
	Kind     string
	Packages []string // Debian bookworm packages, beside python3
	About    string
}

// Presets are the recipes `mse-backend runtime build NAME` knows. Every one
// has python3 and an app server; entrypoint apps (any HTTP server in the
// code directory, e.g. a static Go binary) run on any of them.
var Presets = []Preset{
	{Name: "flask", Kind: KindWSGI, Packages: []string{"python3-flask", "python3-gunicorn", "python3-requests"},
		About: "Python 3.11, Flask 2.2, gunicorn 20.1 (WSGI)"},
	{Name: "fastapi", Kind: KindASGI, Packages: []string{"python3-fastapi", "python3-uvicorn", "python3-requests"},
		About: "Python 3.11, FastAPI 0.92, uvicorn 0.17 (ASGI)"},
	{Name: "python", Kind: KindAny, Packages: []string{"python3-flask", "python3-gunicorn", "python3-fastapi", "python3-uvicorn", "python3-requests"},
		About: "Python 3.11 with Flask, gunicorn, FastAPI and uvicorn (WSGI and ASGI, detected per app)"},
	{Name: "pandas", Kind: KindWSGI, Packages: []string{"python3-flask", "python3-gunicorn", "python3-pandas", "python3-requests"},
		About: "Python 3.11, Flask, gunicorn, pandas 1.5 and NumPy (WSGI)"},
}

// WithPython returns the Debian packages a build installs: python3 and pkgs.
func WithPython(pkgs []string) []string { return append([]string{"python3"}, pkgs...) }

// PresetNamed returns the preset of that name.
func PresetNamed(name string) (Preset, bool) {
	for _, p := range Presets {
		if p.Name == name {
			return p, true
		}
	}
	return Preset{}, false
}

// Suite is the Debian release runtimes are built from.
const Suite = "bookworm"

// DefaultImage is the image reference of a runtime built here.
func DefaultImage(name string) string { return "mse/" + name + ":" + Suite }
