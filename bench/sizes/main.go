// Command sizes reports where the bytes of the provisiond binary go: the stripped size for
// each gateway CPU, and the symbol bytes of an amd64 build summed per module (ELF symbol sizes of
// a build with symbols, each package mapped to its module with
// `go version -m`). The symbol sum is smaller than the file: it leaves out the runtime's
// tables (pclntab, type links) that the linker writes without a sized symbol per package.
// Last, it names the linked functions that call reflect.Value.Method or MethodByName (such as
// text/template's executor): while one is reachable the linker keeps every exported method of
// every type stored in an interface, which cost provisiond 3 MB.
//
//	go run ./bench/sizes [-pkg ./cmd/provisiond] [-top 25]
package main

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/provisiond/provisiond/bench/internal/benchkit"
)

func main() {
	pkg := flag.String("pkg", "./cmd/provisiond", "package to build")
	top := flag.Int("top", 25, "modules to list (the rest are summed)")
	syms := flag.String("syms", "", "only the per-module table, of this already built binary with symbols")
	flag.Parse()
	ctx := context.Background()
	var err error
	if *syms != "" {
		err = table(ctx, *syms, *top)
	} else {
		err = run(ctx, *pkg, *top)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sizes:", err)
		os.Exit(1)
	}
}

// target is one gateway CPU, as `make deb-all` builds it.
type target struct{ name, goarch, goarm string }

var targets = []target{{"amd64", "amd64", ""}, {"arm64", "arm64", ""}, {"armhf", "arm", "7"}}

func run(ctx context.Context, pkg string, top int) error {
	dir, err := os.MkdirTemp("", "sizes")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Printf("| architecture | `-trimpath -tags %s -ldflags '-s -w'` (bytes) | MiB |\n", benchkit.ReleaseTags)
	fmt.Println("|---|---|---|")
	for _, t := range targets {
		out := filepath.Join(dir, "provisiond-"+t.name)
		if err := build(ctx, t, out, pkg, "-s -w"); err != nil {
			return err
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		fmt.Printf("| %s | %d | %.2f |\n", t.name, st.Size(), float64(st.Size())/(1<<20))
	}

	full := filepath.Join(dir, "provisiond-syms")
	if err := build(ctx, targets[0], full, pkg, ""); err != nil {
		return err
	}
	fmt.Println()
	if err := table(ctx, full, top); err != nil {
		return err
	}
	fns, err := reflectMethodCallers(ctx, targets[0], filepath.Join(dir, "provisiond-dumpdep"), pkg)
	if err != nil {
		return err
	}
	fmt.Println()
	if len(fns) == 0 {
		fmt.Println("dead method elimination: on (no linked function calls reflect.Value.Method or MethodByName)")
		return nil
	}
	fmt.Printf("dead method elimination: OFF, every exported method of every type in an interface is kept; reached through: %s\n",
		strings.Join(fns, ", "))
	return nil
}

// reflectMethodCallers lists the reachable functions the linker marks as calling
// reflect.Value.Method or MethodByName, from its dependency dump (-ldflags=-dumpdep).
func reflectMethodCallers(ctx context.Context, t target, out, pkg string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", benchkit.ReleaseTags,
		"-ldflags", "-dumpdep", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.goarch)
	var dump bytes.Buffer
	cmd.Stderr = &dump
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build %s with -dumpdep: %w", pkg, err)
	}
	seen := map[string]bool{}
	var fns []string
	sc := bufio.NewScanner(&dump)
	for sc.Scan() {
		from, _, ok := strings.Cut(sc.Text(), " <ReflectMethod> -> ")
		if ok && !seen[from] {
			seen[from] = true
			fns = append(fns, from)
		}
	}
	sort.Strings(fns)
	return fns, sc.Err()
}

// table prints the symbol bytes of bin per module.
func table(ctx context.Context, full string, top int) error {
	mods, err := modules(ctx, full)
	if err != nil {
		return err
	}
	sums, total, err := symbolBytes(full, mods)
	if err != nil {
		return err
	}
	type row struct {
		mod   string
		bytes int64
	}
	rows := make([]row, 0, len(sums))
	for m, b := range sums {
		rows = append(rows, row{m, b})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].bytes > rows[j].bytes })
	fmt.Printf("symbol bytes of the amd64 build: %d (%.2f MiB)\n\n", total, float64(total)/(1<<20))
	fmt.Println("| module | symbol bytes | share |")
	fmt.Println("|---|---|---|")
	var rest int64
	for i, r := range rows {
		if i >= top {
			rest += r.bytes
			continue
		}
		fmt.Printf("| %s | %d | %.1f %% |\n", r.mod, r.bytes, 100*float64(r.bytes)/float64(total))
	}
	if rest > 0 {
		fmt.Printf("| (%d more modules) | %d | %.1f %% |\n", len(rows)-top, rest, 100*float64(rest)/float64(total))
	}
	return nil
}

func build(ctx context.Context, t target, out, pkg, ldflags string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", benchkit.ReleaseTags, "-ldflags", ldflags, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+t.goarch)
	if t.goarm != "" {
		cmd.Env = append(cmd.Env, "GOARM="+t.goarm)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s for %s: %w", pkg, t.name, err)
	}
	return nil
}

// modules lists the module paths linked into bin (main module included), longest first so
// that the first prefix match is the right one.
func modules(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("go version -m: %w", err)
	}
	var mods []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && (f[0] == "mod" || f[0] == "dep") {
			mods = append(mods, f[1])
		}
	}
	sort.Slice(mods, func(i, j int) bool { return len(mods[i]) > len(mods[j]) })
	return mods, nil
}

// symbolBytes sums the sizes of bin's ELF symbols per module, leaving out those in sections
// that take no file bytes (.bss, .noptrbss: e.g. a 32 MiB DRBG buffer of crypto/internal that
// `go tool nm` lists as data). Packages of the standard library (no dot in the first path
// element) count as "std", symbols without a package (go:func.*, pclntab) as "(runtime tables)".
func symbolBytes(bin string, mods []string) (map[string]int64, int64, error) {
	f, err := elf.Open(bin)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, 0, fmt.Errorf("symbols of %s: %w", bin, err)
	}
	sums := map[string]int64{}
	var total int64
	for _, s := range syms {
		if s.Size == 0 || int(s.Section) <= 0 || int(s.Section) >= len(f.Sections) {
			continue
		}
		if f.Sections[s.Section].Type == elf.SHT_NOBITS {
			continue
		}
		total += int64(s.Size)
		sums[moduleOf(pkgOf(s.Name), mods)] += int64(s.Size)
	}
	return sums, total, nil
}

// pkgOf is the import path a symbol name starts with, after the linker's prefixes.
func pkgOf(name string) string {
	for _, p := range []string{"go:itab.", "type:", "go:", "*"} {
		name = strings.TrimPrefix(name, p)
	}
	name = strings.TrimLeft(name, "*[]")
	slash := strings.LastIndex(name, "/")
	if i := strings.IndexAny(name[slash+1:], ".,"); i >= 0 {
		name = name[:slash+1+i]
	}
	return name
}

func moduleOf(pkg string, mods []string) string {
	for _, m := range mods {
		if pkg == m || strings.HasPrefix(pkg, m+"/") {
			return m
		}
	}
	first, _, _ := strings.Cut(pkg, "/")
	switch {
	case strings.HasPrefix(pkg, "vendor/"), !strings.Contains(first, ".") && first != "" && !strings.ContainsAny(first, "(){} "):
		return "std"
	default:
		return "(runtime tables)"
	}
}
