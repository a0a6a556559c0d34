package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/wagglevm/waggle/spec"
	"github.com/wagglevm/waggle/versions"
	"github.com/wagglevm/waggle/vmconfig"
)

var (
	// errUsage ends a command line that could not be parsed; the usage has
	// been printed on stderr (exit status 2).
	errUsage = errors.New("usage")
	// errHelp ends a command line that asked for help; the help has been
	// printed on stdout (exit status 0).
	errHelp = errors.New("help")
)

// vmCommand is one `waggle vm` command, for the usage texts.
type vmCommand struct {
	name, summary string
}

var vmCommands = []vmCommand{
	{"create", "create the server's VM from a spec (-spec file.json) or a config (-config file.toml)"},
	{"get", "show the VM's properties, state and generation (and where it went, once migrated)"},
	{"spec", "show the VM's spec"},
	{"run", "start the VM and show each state until it runs (done at once if it runs)"},
	{"stop", "stop the VM and show each state until it has stopped (then it is destroyed; done at once if it is)"},
	{"reboot", "restart the guest (or wait for the reboot under way)"},
	{"watch", "print the VM's state, then every change, until it ends"},
	{"serial", "attach to the serial console (detach with Ctrl-]; it ends when the VM does);\n" +
		"-history prints what the guest printed, also after the VM ended"},
	{"migrate", "live-migrate the VM to another server (-to host:port), with progress and a summary;\n" +
		"-src-addr host:port is the source as the target reaches it (default: -server)"},
}

// vmUsage is the usage of `waggle vm`.
func vmUsage() string {
	var b strings.Builder
	b.WriteString("usage: waggle vm <command> [flags]\n\ncommands:\n")
	for _, c := range vmCommands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, strings.ReplaceAll(c.summary, "\n", "\n           "))
	}
	b.WriteString(`
common flags:
  -server ADDR        the VMM server: host:port, http://host:port, or a host (port 12400)
                      (default $WAGGLE_SERVER or 127.0.0.1:12400)
  -token-file FILE    the server's bearer token (default: the file the server wrote at start)
  -o text|json        output for people (default) or for programs
  -api v2|v1          the API version to speak (default: the one a -server URL's path names,
                      http://host:port/v1, else the newest the server serves)

` + "`waggle vm <command> -h` shows a command's flags.\n")
	return b.String()
}

// vmCmd holds what every `waggle vm` command shares.
type vmCmd struct {
	name      string
	fs        *flag.FlagSet
	server    *string
	tokenFile *string
	output    *string
	api       *string
	stdout    io.Writer
	stderr    io.Writer
	// ep is the server -server names; set by parse.
	ep endpoint
}

func newVMCmd(name string, stdout, stderr io.Writer) *vmCmd {
	fs := flag.NewFlagSet("waggle vm "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parse prints errors and usage itself, each where it belongs
	def := os.Getenv("WAGGLE_SERVER")
	if def == "" {
		def = DefaultListen
	}
	return &vmCmd{
		name:      name,
		fs:        fs,
		server:    fs.String("server", def, "the VMM server: host:port, http://host:port, or a host (port 12400)"),
		tokenFile: fs.String("token-file", os.Getenv("WAGGLE_TOKEN_FILE"), "the server's bearer token (default $WAGGLE_TOKEN_FILE, else the file the server wrote)"),
		output:    fs.String("o", "text", "output: text or json"),
		api:       fs.String("api", "", "the API version to speak: "+apiNames()+" (default: the one a -server URL's path names, else the newest the server serves)"),
		stdout:    stdout, stderr: stderr,
	}
}

// usage prints the command's usage and flags to w.
func (c *vmCmd) usage(w io.Writer) {
	summary := ""
	for _, vc := range vmCommands {
		if vc.name == c.name {
			summary = vc.summary
		}
	}
	fmt.Fprintf(w, "usage: waggle vm %s [flags]\n\n%s\n\nflags:\n", c.name, summary)
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

// parse parses the command's flags: help goes to stdout (errHelp), a
// mistake to stderr with the usage (errUsage).
func (c *vmCmd) parse(args []string) error {
	err := c.fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		c.usage(c.stdout)
		return errHelp
	case err != nil:
		fmt.Fprintf(c.stderr, "waggle vm %s: %v\n", c.name, err)
		c.usage(c.stderr)
		return errUsage
	}
	if *c.output != "text" && *c.output != "json" {
		fmt.Fprintf(c.stderr, "waggle vm %s: -o: want text or json, not %q\n", c.name, *c.output)
		return errUsage
	}
	if *c.api != "" && !slices.ContainsFunc(apiVersions, func(v apiVersion) bool { return v.name == *c.api }) {
		fmt.Fprintf(c.stderr, "waggle vm %s: -api: want one of %s, not %q\n", c.name, apiNames(), *c.api)
		return errUsage
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "waggle vm %s: unexpected arguments: %v (flags go before them: see -h)\n", c.name, c.fs.Args())
		return errUsage
	}
	if c.ep, err = parseServer(*c.server); err != nil {
		fmt.Fprintf(c.stderr, "waggle vm %s: -server: %v\n", c.name, err)
		return errUsage
	}
	return nil
}

// connect parses the command's flags and returns the server they name.
func (c *vmCmd) connect(ctx context.Context, args []string) (vmmAPI, error) {
	if err := c.parse(args); err != nil {
		return nil, err
	}
	return c.client(ctx)
}

// client returns the server -server names, in the version -api names or
// else the newest it serves.
func (c *vmCmd) client(ctx context.Context) (vmmAPI, error) {
	return c.clientFor(ctx, c.ep, *c.tokenFile, 90*time.Second)
}

// clientFor returns the server at ep, with the token in tokenFile, or else
// the one the server wrote where the CLI finds it.
func (c *vmCmd) clientFor(ctx context.Context, ep endpoint, tokenFile string, timeout time.Duration) (vmmAPI, error) {
	tok, err := serverToken(ep, tokenFile)
	if err != nil {
		return nil, err
	}
	api := *c.api
	if api == "" {
		api = ep.api
	}
	return dialVMM(ctx, ep, tok, timeout, api)
}

func (c *vmCmd) json() bool { return *c.output == "json" }

func (c *vmCmd) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// runVM runs one `waggle vm` command line.
func runVM(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vmUsage())
		return errUsage
	}
	c := newVMCmd(args[0], stdout, stderr)
	rest := args[1:]
	var err error
	switch args[0] {
	case "create":
		err = c.create(ctx, rest)
	case "get":
		err = c.get(ctx, rest)
	case "spec":
		err = c.spec(ctx, rest)
	case "run", "stop", "reboot":
		err = c.state(ctx, args[0], rest)
	case "watch":
		err = c.watch(ctx, rest)
	case "serial":
		err = c.serial(ctx, rest, stdin)
	case "migrate":
		err = c.migrate(ctx, rest)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, vmUsage())
		return nil
	default:
		fmt.Fprintf(stderr, "waggle vm: unknown command %q\n%s", args[0], vmUsage())
		return errUsage
	}
	return explainNetErr(err)
}

func (c *vmCmd) create(ctx context.Context, args []string) error {
	specPath := c.fs.String("spec", "", "an InstanceSpec as JSON, in the API version spoken (a v1 spec is a v2 spec too)")
	configPath := c.fs.String("config", "", "a VM config file (TOML)")
	name := c.fs.String("name", "", "the instance's name (default: the config's name, else \"vm\")")
	id := c.fs.String("id", "", "the instance's UUID (default: a new one)")
	if err := c.parse(args); err != nil {
		return err
	}
	if (*specPath == "") == (*configPath == "") {
		fmt.Fprintln(c.stderr, "waggle vm create: give exactly one of -spec and -config")
		c.usage(c.stderr)
		return errUsage
	}
	props := properties{Name: "vm", ID: uuid.New()}
	var cfg *vmconfig.File
	if *configPath != "" {
		f, err := vmconfig.Load(*configPath)
		if err != nil {
			return err
		}
		cfg = &f
		if f.Name != "" {
			props.Name = f.Name
		}
		props.Description = f.Description
	}
	if *name != "" {
		props.Name = *name
	}
	if *id != "" {
		u, err := uuid.Parse(*id)
		if err != nil {
			return fmt.Errorf("-id: %w", err)
		}
		props.ID = u
	}
	var specData []byte
	if *specPath != "" {
		data, err := os.ReadFile(*specPath)
		if err != nil {
			return err
		}
		specData = data
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	var s spec.Spec
	if cfg != nil {
		if s, err = cfg.Spec(); err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
	} else if s, err = cl.decodeSpec(specData); err != nil {
		return fmt.Errorf("%s (an InstanceSpec of API %s): %w", *specPath, cl.version(), err)
	}
	inst, err := cl.create(ctx, props, s)
	if err != nil {
		var e *apiError
		if errors.As(err, &e) && e.Code == codeInstanceExists {
			c.explainExists(ctx, cl, e, props, *id != "", s)
		}
		return err
	}
	return c.printInstance(inst)
}

// explainExists fills e, a 409 instance_exists answer to a create, with
// the VM the server has, how this create differs from it, and what to do.
func (c *vmCmd) explainExists(ctx context.Context, cl vmmAPI, e *apiError, props properties, idGiven bool, want spec.Spec) {
	have, err := cl.instance(ctx)
	if err != nil {
		return // the general words stand
	}
	e.Text = fmt.Sprintf("the server at %s already has a VM: %q (id %s, %s)", c.ep, have.Properties.Name, have.Properties.ID, have.State)
	var diff []string
	if have.Properties.ID != props.ID {
		what := "id"
		if !idGiven {
			what += " (without -id, each create makes a new one)"
		}
		diff = append(diff, what)
	}
	if have.Properties.Name != props.Name {
		diff = append(diff, "name")
	}
	if have.Properties.Description != props.Description {
		diff = append(diff, "description")
	}
	if sv, err := cl.spec(ctx); err == nil {
		if sv.Spec == nil {
			diff = append(diff, "spec (the VM there is a migration target)")
		} else if parts := specDiff(*sv.Spec, want); len(parts) > 0 {
			diff = append(diff, "spec ("+strings.Join(parts, ", ")+")")
		}
	}
	var hint strings.Builder
	if len(diff) > 0 {
		fmt.Fprintf(&hint, "this create asks for a different one (it differs in %s). ", strings.Join(diff, ", "))
	}
	switch {
	case have.State == stateStopping || have.State == stateStopped:
		hint.WriteString("The server holds one VM at a time and that one is ending: wait for it (`waggle vm watch`), then create again")
	default:
		hint.WriteString("The server holds one VM at a time: stop that one first with `waggle vm stop`, then create again")
	}
	e.Hint = hint.String()
}

// specDiff names the parts of two specs that differ: "board", "boot",
// "components.com1". Both are compared as the newest version writes them,
// every default written out.
func specDiff(a, b spec.Spec) []string {
	newest, _ := versions.Lookup(versions.Names()[0])
	top := func(s spec.Spec) map[string]json.RawMessage {
		m := map[string]json.RawMessage{}
		if data, err := newest.Encode(s); err == nil {
			_ = json.Unmarshal(data, &m)
		}
		return m
	}
	am, bm := top(a), top(b)
	var parts []string
	for _, k := range sortedKeys(am, bm) {
		if k == "components" {
			ac, bc := map[string]json.RawMessage{}, map[string]json.RawMessage{}
			_ = json.Unmarshal(am[k], &ac)
			_ = json.Unmarshal(bm[k], &bc)
			for _, ck := range sortedKeys(ac, bc) {
				if string(ac[ck]) != string(bc[ck]) {
					parts = append(parts, "components."+ck)
				}
			}
			continue
		}
		if string(am[k]) != string(bm[k]) {
			parts = append(parts, k)
		}
	}
	return parts
}

// sortedKeys returns the keys of both maps, sorted, each once.
func sortedKeys(a, b map[string]json.RawMessage) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (c *vmCmd) printInstance(inst instanceView) error {
	return c.printInstanceMoved(inst, nil)
}

// printInstanceMoved prints inst and, when out is set, the outbound
// migration that took its VM away. -o json prints the server's answer.
func (c *vmCmd) printInstanceMoved(inst instanceView, out *migrationProgress) error {
	if c.json() {
		return c.printRaw(inst.raw)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", inst.Properties.Name)
	fmt.Fprintf(tw, "id\t%s\n", inst.Properties.ID)
	fmt.Fprintf(tw, "state\t%s\n", inst.State)
	fmt.Fprintf(tw, "gen\t%d\n", inst.Gen)
	if inst.Failure != nil {
		fmt.Fprintf(tw, "failure\t%s\n", inst.Failure)
	}
	if out != nil {
		fmt.Fprintf(tw, "moved\t%s\n", movedText(*out))
	}
	return tw.Flush()
}

// movedText says where a VM went that an outbound migration took away.
// The source does not know the target's address, so it says what it knows.
func movedText(out migrationProgress) string {
	return fmt.Sprintf("migrated out (migration %s completed); the VM runs on at the target server", out.MigrationID)
}

// migratedOut returns the outbound migration that took the VM away, when
// st is a destroyed source whose migration completed.
func migratedOut(st stateView) *migrationProgress {
	out := st.Migration.Out
	if st.State != stateDestroyed || out == nil || out.Phase != phaseCompleted {
		return nil
	}
	return out
}

func (c *vmCmd) get(ctx context.Context, args []string) error {
	cl, err := c.connect(ctx, args)
	if err != nil {
		return err
	}
	inst, err := cl.instance(ctx)
	if err != nil {
		return err
	}
	var out *migrationProgress
	if inst.State == stateDestroyed && !c.json() {
		if st, err := stateNow(ctx, cl); err == nil {
			out = migratedOut(st)
		}
	}
	return c.printInstanceMoved(inst, out)
}

func (c *vmCmd) spec(ctx context.Context, args []string) error {
	cl, err := c.connect(ctx, args)
	if err != nil {
		return err
	}
	sv, err := cl.spec(ctx)
	if err != nil {
		return err
	}
	if c.json() {
		return c.printRaw(sv.raw)
	}
	if sv.Spec == nil {
		fmt.Fprintln(c.stdout, "the VM waits for its migration source to send its spec")
		return nil
	}
	var view struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(sv.raw, &view); err != nil {
		return err
	}
	return c.printRaw(view.Spec)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
