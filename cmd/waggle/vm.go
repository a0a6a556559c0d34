package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	api "github.com/wagglevm/waggle/gen/vmm-server/v1"
	specv1 "github.com/wagglevm/waggle/versions/vmm-server/v1"
	"github.com/wagglevm/waggle/vmconfig"
)

var errUsage = errors.New("usage")

const vmUsage = `usage: waggle vm <command> [flags]

commands:
  create   create the server's VM from a spec (-spec file.json) or a config (-config file.toml)
  get      show the VM's properties, state and generation
  spec     show the VM's spec
  run      start the VM (done at once if it runs)
  stop     stop the VM (it is destroyed afterwards; done at once if it is)
  reboot   restart the guest (or wait for the reboot under way)
  watch    print the VM's state, then each change, until it ends
  serial   attach to the serial console (detach with Ctrl-]; it ends when the VM does)
  migrate  live-migrate the VM to another server (-to host:port), with progress and a summary;
           -src-addr host:port is the source as the target reaches it (default: -server)

common flags:
  -server host:port   the VMM server (default $WAGGLE_SERVER or 127.0.0.1:12400)
  -o text|json        output for people (default) or for programs
`

// vmCmd holds what every `waggle vm` command shares.
type vmCmd struct {
	fs     *flag.FlagSet
	server *string
	output *string
	stdout io.Writer
	stderr io.Writer
}

func newVMCmd(name string, stdout, stderr io.Writer) *vmCmd {
	fs := flag.NewFlagSet("waggle vm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("WAGGLE_SERVER")
	if def == "" {
		def = DefaultListen
	}
	return &vmCmd{
		fs:     fs,
		server: fs.String("server", def, "the VMM server, host:port"),
		output: fs.String("o", "text", "output: text or json"),
		stdout: stdout, stderr: stderr,
	}
}

func (c *vmCmd) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return errUsage
	}
	if *c.output != "text" && *c.output != "json" {
		fmt.Fprintln(c.stderr, "-o: want text or json")
		return errUsage
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "unexpected arguments: %v\n", c.fs.Args())
		return errUsage
	}
	return nil
}

// connect parses the command's flags and returns a client for the server.
func (c *vmCmd) connect(args []string) (*api.ClientWithResponses, error) {
	if err := c.parse(args); err != nil {
		return nil, err
	}
	return c.client()
}

func (c *vmCmd) client() (*api.ClientWithResponses, error) {
	return api.NewClientWithResponses("http://"+*c.server+"/v1", api.WithHTTPClient(&http.Client{Timeout: 90 * time.Second}))
}

func (c *vmCmd) json() bool { return *c.output == "json" }

func (c *vmCmd) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// apiErr turns a non-2xx answer into an error that shows the server's code
// and message.
func apiErr(status int, body []byte) error {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.ErrorCode != "" {
		return fmt.Errorf("server answered %d %s: %s (request %s)", status, e.ErrorCode, e.Message, e.RequestId)
	}
	return fmt.Errorf("server answered %d: %s", status, strings.TrimSpace(string(body)))
}

func runVM(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, vmUsage)
		return errUsage
	}
	c := newVMCmd(args[0], stdout, stderr)
	rest := args[1:]
	switch args[0] {
	case "create":
		return c.create(ctx, rest)
	case "get":
		return c.get(ctx, rest)
	case "spec":
		return c.spec(ctx, rest)
	case "run", "stop", "reboot":
		return c.state(ctx, args[0], rest)
	case "watch":
		return c.watch(ctx, rest)
	case "serial":
		return c.serial(ctx, rest, stdin)
	case "migrate":
		return c.migrate(ctx, rest)
	case "-h", "help", "--help":
		fmt.Fprint(stdout, vmUsage)
		return nil
	}
	fmt.Fprintf(stderr, "waggle vm: unknown command %q\n%s", args[0], vmUsage)
	return errUsage
}

func (c *vmCmd) create(ctx context.Context, args []string) error {
	specPath := c.fs.String("spec", "", "a vmm-server v1 InstanceSpec as JSON")
	configPath := c.fs.String("config", "", "a VM config file (TOML)")
	name := c.fs.String("name", "", "the instance's name (default: the config's name, else \"vm\")")
	id := c.fs.String("id", "", "the instance's UUID (default: a new one)")
	if err := c.parse(args); err != nil {
		return err
	}
	if (*specPath == "") == (*configPath == "") {
		fmt.Fprintln(c.stderr, "give exactly one of -spec and -config")
		return errUsage
	}
	props := api.InstanceProperties{Name: "vm", Id: uuid.New()}
	var wire api.InstanceSpec
	if *configPath != "" {
		f, err := vmconfig.Load(*configPath)
		if err != nil {
			return err
		}
		s, err := f.Spec()
		if err != nil {
			return fmt.Errorf("%s: %w", *configPath, err)
		}
		if wire, err = specv1.FromSpec(s); err != nil {
			return err
		}
		if f.Name != "" {
			props.Name = f.Name
		}
		if f.Description != "" {
			props.Description = &f.Description
		}
	} else {
		data, err := os.ReadFile(*specPath)
		if err != nil {
			return err
		}
		if wire, err = specv1.DecodeInstanceSpec(data); err != nil {
			return fmt.Errorf("%s: %w", *specPath, err)
		}
	}
	if *name != "" {
		props.Name = *name
	}
	if *id != "" {
		u, err := uuid.Parse(*id)
		if err != nil {
			return fmt.Errorf("-id: %w", err)
		}
		props.Id = u
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.InstanceEnsureWithResponse(ctx, api.InstanceEnsureRequest{Properties: props, Spec: &wire})
	if err != nil {
		return err
	}
	inst := r.JSON201
	if inst == nil {
		inst = r.JSON200
	}
	if inst == nil {
		return apiErr(r.StatusCode(), r.Body)
	}
	return c.printInstance(*inst)
}

func (c *vmCmd) printInstance(inst api.Instance) error {
	if c.json() {
		return c.printJSON(inst)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", inst.Properties.Name)
	fmt.Fprintf(tw, "id\t%s\n", inst.Properties.Id)
	fmt.Fprintf(tw, "state\t%s\n", inst.State)
	fmt.Fprintf(tw, "gen\t%d\n", inst.Gen)
	if inst.FailureReason != nil {
		fmt.Fprintf(tw, "failure\t%s\n", *inst.FailureReason)
	}
	return tw.Flush()
}

// getInstance fetches the server's instance.
func getInstance(ctx context.Context, cl *api.ClientWithResponses) (api.Instance, error) {
	r, err := cl.InstanceGetWithResponse(ctx)
	if err != nil {
		return api.Instance{}, err
	}
	if r.JSON200 == nil {
		return api.Instance{}, apiErr(r.StatusCode(), r.Body)
	}
	return *r.JSON200, nil
}

func (c *vmCmd) get(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	inst, err := getInstance(ctx, cl)
	if err != nil {
		return err
	}
	return c.printInstance(inst)
}

func (c *vmCmd) spec(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	r, err := cl.InstanceSpecGetWithResponse(ctx)
	if err != nil {
		return err
	}
	if r.JSON200 == nil {
		return apiErr(r.StatusCode(), r.Body)
	}
	if r.JSON200.Spec == nil && !c.json() {
		fmt.Fprintln(c.stdout, "the VM waits for its migration source to send its spec")
		return nil
	}
	if c.json() {
		return c.printJSON(r.JSON200)
	}
	return c.printJSON(r.JSON200.Spec)
}

// A goal is what a state request waits for: the states that meet it, and
// the states from which, by the instance lifecycle (InstanceState in the
// contract), it can no longer come.
type goal struct {
	want    string              // the goal, for messages: "running"
	already []api.InstanceState // states in which the request has nothing to do
	met     []api.InstanceState
	lost    []api.InstanceState
}

var notRunning = []api.InstanceState{api.InstanceStateStopping, api.InstanceStateStopped,
	api.InstanceStateDestroyed, api.InstanceStateFailed}

// goals are the state requests' goals. The server answers 204 when a
// request is already met or under way, so the CLI checks the state first.
var goals = map[string]goal{
	"run": {want: "running", already: []api.InstanceState{api.InstanceStateRunning},
		met: []api.InstanceState{api.InstanceStateRunning}, lost: notRunning},
	"stop": {want: "stopped", already: []api.InstanceState{api.InstanceStateStopped, api.InstanceStateDestroyed},
		met: []api.InstanceState{api.InstanceStateStopped, api.InstanceStateDestroyed}},
	"reboot": {want: "running", met: []api.InstanceState{api.InstanceStateRunning}, lost: notRunning},
}

// reached says whether st ends the wait for g, and with what error: nil
// when st meets g, or when the VM has ended (destroyed) and g names no
// state; an error when the VM failed or g can no longer be met.
func (g goal) reached(st api.InstanceStateView) (bool, error) {
	switch {
	case slices.Contains(g.met, st.State):
		return true, nil
	case st.State == api.InstanceStateFailed:
		return true, fmt.Errorf("the VM failed: %s", deref(st.FailureReason))
	case slices.Contains(g.lost, st.State):
		return true, fmt.Errorf("the VM is %s: it will not be %s", st.State, g.want)
	case st.State == api.InstanceStateDestroyed:
		return true, nil
	}
	return false, nil
}

func (c *vmCmd) state(ctx context.Context, verb string, args []string) error {
	wait := c.fs.Bool("wait", true, "wait until the VM reaches the state asked for (or fails)")
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	g := goals[verb]
	now, err := stateNow(ctx, cl)
	if err != nil {
		return err
	}
	if slices.Contains(g.already, now.State) {
		return c.printState(now) // nothing to do
	}
	// A reboot under way is the reboot asked for: wait for its end.
	if verb != "reboot" || now.State != api.InstanceStateRebooting {
		r, err := cl.InstanceStatePutWithResponse(ctx, api.InstanceStateChangeRequest{Requested: api.InstanceStateRequested(verb)})
		if err != nil {
			return err
		}
		if r.StatusCode() != http.StatusNoContent {
			return apiErr(r.StatusCode(), r.Body)
		}
	}
	if !*wait {
		return nil
	}
	return c.follow(ctx, cl, now.Gen, g)
}

// stateNow returns the instance's state view at once, as the state
// monitor shows it.
func stateNow(ctx context.Context, cl *api.ClientWithResponses) (api.InstanceStateView, error) {
	timeout := int32(0)
	r, err := cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: 0, TimeoutMs: &timeout})
	if err != nil {
		return api.InstanceStateView{}, err
	}
	if r.JSON200 == nil {
		return api.InstanceStateView{}, apiErr(r.StatusCode(), r.Body)
	}
	return *r.JSON200, nil
}

// printState prints one state: a JSON line, or a timestamped line of text.
func (c *vmCmd) printState(st api.InstanceStateView) error {
	if c.json() {
		return json.NewEncoder(c.stdout).Encode(st)
	}
	line := fmt.Sprintf("%s  gen %d  %s", time.Now().Format("15:04:05.000"), st.Gen, st.State)
	if st.FailureReason != nil {
		line += ": " + *st.FailureReason
	}
	_, err := fmt.Fprintln(c.stdout, line)
	return err
}

// follow prints each state change after gen until g is reached (see
// goal.reached).
func (c *vmCmd) follow(ctx context.Context, cl *api.ClientWithResponses, gen int64, g goal) error {
	for {
		r, err := cl.InstanceStateMonitorWithResponse(ctx, &api.InstanceStateMonitorParams{Gen: gen})
		if err != nil {
			return err
		}
		if r.JSON200 == nil {
			return apiErr(r.StatusCode(), r.Body)
		}
		st := *r.JSON200
		if st.Gen == gen {
			continue // the long poll timed out
		}
		gen = st.Gen
		if err := c.printState(st); err != nil {
			return err
		}
		if done, err := g.reached(st); done {
			return err
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// watch prints the current state, then every change until the VM ends: it
// exits 0 once the VM is destroyed, 1 if it failed.
func (c *vmCmd) watch(ctx context.Context, args []string) error {
	cl, err := c.connect(args)
	if err != nil {
		return err
	}
	now, err := stateNow(ctx, cl)
	if err != nil {
		return err
	}
	if err := c.printState(now); err != nil {
		return err
	}
	if done, err := (goal{}).reached(now); done {
		return err
	}
	err = c.follow(ctx, cl, now.Gen, goal{})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
