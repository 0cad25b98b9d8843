// Package livepage opens the dashboard's page in headless Chromium, driven over the DevTools
// protocol, and reads its tiles as the page drew them. The end-to-end test and the station
// bench use it to see what the event stream does to a page that stays open: nothing here is
// part of the daemon, and cmd/provisiond does not import it, so the browser driver never
// reaches the shipped binary.
package livepage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/chromedp/chromedp"
)

// ErrNoChromium is returned by Find when no Chromium binary is installed.
var ErrNoChromium = errors.New("livepage: no chromium binary found (Debian package chromium)")

// Find returns the Chromium binary to drive: $CHROMIUM when set, else chromium on PATH or at
// /usr/bin/chromium.
func Find() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Config says how to start the browser. Zero values: a 1920x1080 window and a fresh profile
// in a temporary folder that Close removes.
type Config struct {
	Chromium      string // the binary, from Find
	Width, Height int
	ProfileDir    string
}

// Page is one open tab on the dashboard. Its methods must not be called concurrently.
type Page struct {
	ctx     context.Context // the tab's chromedp context
	cancel  func()
	cleanup func()
}

// Open starts Chromium and loads url in one tab. The browser lives until Close or until ctx
// ends. As root, Chromium refuses to start with its sandbox, so it runs without it then.
func Open(ctx context.Context, cfg Config, url string) (*Page, error) {
	if cfg.Chromium == "" {
		return nil, ErrNoChromium
	}
	if cfg.Width == 0 || cfg.Height == 0 {
		cfg.Width, cfg.Height = 1920, 1080
	}
	cleanup := func() {}
	if cfg.ProfileDir == "" {
		dir, err := os.MkdirTemp("", "livepage-")
		if err != nil {
			return nil, err
		}
		cfg.ProfileDir = dir
		cleanup = func() { os.RemoveAll(dir) }
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(cfg.Chromium),
		chromedp.UserDataDir(cfg.ProfileDir),
		chromedp.WindowSize(cfg.Width, cfg.Height),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("hide-scrollbars", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tctx, cancelTab := chromedp.NewContext(actx)
	p := &Page{ctx: tctx, cancel: func() { cancelTab(); cancelAlloc() }, cleanup: cleanup}
	// The first action starts the browser and must run on the tab's own context: a deadline
	// there would end the browser with it. The page's load is bounded by the browser's own
	// navigation, and the caller's ctx ends it all.
	if err := chromedp.Do(tctx, chromedp.Navigate(url)); err != nil {
		p.Close()
		return nil, fmt.Errorf("livepage: open %s: %w", url, err)
	}
	return p, nil
}

// Close ends the browser and removes its temporary profile.
func (p *Page) Close() {
	p.cancel()
	p.cleanup()
}

// Eval evaluates a JavaScript expression in the page and decodes its JSON value into T.
func Eval[T any](ctx context.Context, p *Page, expr string) (T, error) {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		return v, fmt.Errorf("livepage: eval: %w", err)
	}
	return v, nil
}

// WaitFor waits up to timeout for the JavaScript expression to be truthy in the page.
func (p *Page) WaitFor(ctx context.Context, expr string, timeout time.Duration) error {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(20*time.Millisecond))); err != nil {
		return fmt.Errorf("livepage: waiting for %s: %w", expr, err)
	}
	return nil
}

// Screenshot writes a PNG of the whole page to path.
func (p *Page) Screenshot(ctx context.Context, path string) error {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return fmt.Errorf("livepage: screenshot: %w", err)
	}
	return os.WriteFile(path, png, 0o644)
}

// Resize gives the page a viewport of w×h CSS pixels, as a phone's screen would.
func (p *Page) Resize(ctx context.Context, w, h int) error {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	return chromedp.Do(ctx, chromedp.EmulateViewport(int64(w), int64(h)))
}

// bound derives a context for one action from the tab's: it ends with ctx or the tab.
func (p *Page) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	actx, cancel := context.WithCancel(p.ctx)
	stop := context.AfterFunc(ctx, cancel)
	return actx, func() { stop(); cancel() }
}

// Tile is one tile as the page shows it.
type Tile struct {
	Instance string `json:"instance"`
	Class    string `json:"class"` // the tile's data-class
	Word     string `json:"word"`  // the state word shown on the tile
	Last     string `json:"last"`  // the "last: …" line, "" when none
	OK       int    `json:"ok"`    // good attempts on the tile's timeline
	Bad      int    `json:"bad"`   // failed attempts on the timeline
}

// tilesJS reads every tile of the page, in the page's order.
const tilesJS = `Array.from(document.querySelectorAll("#tiles .tile")).map(t => ({
  instance: t.dataset.instance || "",
  class: t.dataset.class || "",
  word: (t.querySelector(".state") || {}).textContent || "",
  last: (Array.from(t.querySelectorAll(".line")).map(l => l.textContent).find(s => s.startsWith("last: ")) || ""),
  ok: t.querySelectorAll(".tl i.ok").length,
  bad: t.querySelectorAll(".tl i.bad").length,
}))`

// Tiles reads the tiles the page shows now.
func (p *Page) Tiles(ctx context.Context) ([]Tile, error) {
	return Eval[[]Tile](ctx, p, tilesJS)
}

// MarkWindow sets a marker on the page's window. A reload or any navigation replaces the
// window object and loses it (each document has its own performance timeline too, so a count
// of navigation entries would not see a reload).
func (p *Page) MarkWindow(ctx context.Context) error {
	_, err := Eval[bool](ctx, p, `window.__livepageMark = true`)
	return err
}

// SameDocument reports whether the page still holds the marker MarkWindow set: the tab has
// neither reloaded nor navigated since.
func (p *Page) SameDocument(ctx context.Context) (bool, error) {
	return Eval[bool](ctx, p, `window.__livepageMark === true`)
}

// Change is a tile's look changing, as the page's MutationObserver saw it.
type Change struct {
	Instance string `json:"instance"`
	Class    string `json:"class"`
	Last     string `json:"last"`
	OK       int    `json:"ok"`
	At       int64  `json:"at"` // Date.now() in the page, Unix milliseconds
}

// watchJS installs a MutationObserver on the tiles that logs, with the page's Date.now(),
// every tile whose class, last line or timeline differs from what it showed before. The
// page redraws every tile on each pushed snapshot, so only real changes are logged.
const watchJS = `(() => {
  if (window.__livepageLog) return true;
  const log = window.__livepageLog = [], seen = new Map();
  const look = () => {
    const now = Date.now();
    for (const t of document.querySelectorAll("#tiles .tile")) {
      const last = (Array.from(t.querySelectorAll(".line")).map(l => l.textContent).find(s => s.startsWith("last: ")) || "");
      const c = {instance: t.dataset.instance || "", class: t.dataset.class || "", last: last,
                 ok: t.querySelectorAll(".tl i.ok").length, at: now};
      const key = c.class + "|" + c.last + "|" + c.ok;
      if (seen.get(c.instance) !== key) { seen.set(c.instance, key); log.push(c); }
    }
  };
  look();
  new MutationObserver(look).observe(document.getElementById("tiles"), {childList: true, subtree: true});
  return true;
})()`

// Watch starts logging tile changes in the page; Changes returns them. What the page shows
// when Watch is called is logged first, with that time.
func (p *Page) Watch(ctx context.Context) error {
	_, err := Eval[bool](ctx, p, watchJS)
	return err
}

// Changes returns every tile change logged since Watch, oldest first.
func (p *Page) Changes(ctx context.Context) ([]Change, error) {
	return Eval[[]Change](ctx, p, `window.__livepageLog || []`)
}
