package s3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Config
		err  string
	}{
		{in: "s3://bundles", want: Config{Bucket: "bundles"}},
		{in: "s3://bundles/", want: Config{Bucket: "bundles"}},
		{in: "s3://bundles/mse/prod", want: Config{Bucket: "bundles", Prefix: "mse/prod/"}},
		{in: "s3://b-1.x/p?endpoint=127.0.0.1:9000&region=eu-west-3&tls=false",
			want: Config{Bucket: "b-1.x", Prefix: "p/", Endpoint: "127.0.0.1:9000", Region: "eu-west-3", Insecure: true}},
		{in: "s3://b12/p?endpoint=minio.svc:443&tls=true", want: Config{Bucket: "b12", Prefix: "p/", Endpoint: "minio.svc:443"}},
		{in: "s3://b12?endpoint=[::1]:9000", want: Config{Bucket: "b12", Endpoint: "[::1]:9000"}},
		{in: "/var/lib/mse/bundles", err: "not an s3:// URL"},
		{in: "http://b12/p", err: "not an s3:// URL"},
		{in: "s3://KEY:hunter2@b12/p", err: "carries credentials"},
		{in: "s3://Bad_Bucket/p", err: "bucket"},
		{in: "s3:///p", err: "bucket"},
		{in: "s3://b12/a/../b", err: "segment"},
		{in: "s3://b12/a//b", err: "segment"},
		{in: "s3://b12/a b", err: "only letters"},
		{in: "s3://b12?endpoint=host", err: "HOST:PORT"},
		{in: "s3://b12?endpoint=host:0", err: "bad port"},
		{in: "s3://b12?endpoint=:9000", err: "HOST:PORT"},
		{in: "s3://b12?region=EU", err: "region"},
		{in: "s3://b12?tls=maybe", err: "tls"},
		{in: "s3://b12?tls=false&tls=true", err: "2 times"},
		{in: "s3://b12?secret=x", err: "unknown parameter"},
		{in: "s3://b12#frag", err: "not"},
		{in: "s3://b12/" + strings.Repeat("a", 3000), err: "longer than"},
	} {
		got, err := ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseURL(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("ParseURL(%q): the error shows the secret: %v", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("s3://bundles/mse?endpoint=127.0.0.1:9000&region=us-east-1&tls=false")
	f.Add("s3://a:b@c/d")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseURL(in)
		if err != nil {
			return
		}
		if checkPrefix(cfg.Prefix) != nil || cfg.Bucket == "" {
			t.Fatalf("ParseURL(%q) accepted %+v", in, cfg)
		}
	})
}

func TestCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_ACCESS_KEY", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SECRET_KEY", "")
	t.Setenv("AWS_PROFILE", "")
	if _, err := Credentials(""); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("no credentials in the environment: %v", err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-from-env")
	c, err := Credentials("")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get(); v.AccessKeyID != "AKIDTEST" || v.SecretAccessKey != "s3cr3t-from-env" {
		t.Errorf("from the environment: %+v", v)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	os.WriteFile(file, []byte("[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s3cr3t-from-file\n"), 0o600)
	c, err = Credentials(file)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.Get(); v.AccessKeyID != "AKIDFILE" || v.SecretAccessKey != "s3cr3t-from-file" {
		t.Errorf("from the file: %+v", v)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("[default]\nregion = x\n"), 0o600)
	if _, err := Credentials(empty); err == nil || !strings.Contains(err.Error(), "aws_access_key_id") {
		t.Errorf("a file without keys: %v", err)
	}
	if _, err := Credentials(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was accepted")
	}
}
