using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace FlashLm.Cluster;

/// <summary>One node of a <see cref="LocalCluster"/>: the layers it holds (null: all) and whether it serves HTTP.</summary>
public sealed record NodeSpec(string? Layers, bool Http);

/// <summary>
/// Nodes as separate `flashlm node` processes on loopback (127.0.0.1 only), for `flashlm cluster` and the tests: started
/// together (the first is the seed), ready when every node has printed its address and the HTTP nodes report every member
/// up; killed (SIGKILL, as a crash) one at a time or all at the end. Bounded: each wait has a deadline.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    /// <summary>A running node process.</summary>
    public sealed class Node
    {
        internal Node(int index, NodeSpec spec, int port, Process process)
        {
            Index = index;
            Spec = spec;
            Port = port;
            Process = process;
        }

        /// <summary>Its place in the list given.</summary>
        public int Index { get; }
        /// <summary>What it was started as.</summary>
        public NodeSpec Spec { get; }
        /// <summary>Its cluster port.</summary>
        public int Port { get; }
        /// <summary>Its cluster address (akka.tcp://flashlm@127.0.0.1:PORT).</summary>
        public string Address => $"akka.tcp://flashlm@127.0.0.1:{Port}";
        /// <summary>The node's process.</summary>
        public Process Process { get; }
        /// <summary>Its HTTP address, once it serves.</summary>
        public Uri? Http { get; internal set; }
        internal TaskCompletionSource Ready { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        internal System.Text.StringBuilder Log { get; } = new();

        /// <summary>What the node wrote to stderr (and stdout), for error messages.</summary>
        public string Output
        {
            get
            {
                lock (Log) return Log.ToString();
            }
        }

        /// <summary>True once the process has exited (or was killed).</summary>
        public bool Exited => Process.HasExited;
    }

    private readonly List<Node> _nodes = [];

    /// <summary>The nodes, in the order they were given.</summary>
    public IReadOnlyList<Node> Nodes => _nodes;

    /// <summary>
    /// Starts <paramref name="specs"/> as `dotnet <paramref name="flashlmDll"/> node --model <paramref name="layout"/> ...` (or the
    /// flashlm executable itself when <paramref name="flashlmDll"/> is not a .dll) with <paramref name="settings"/> (--set
    /// key=value) and <paramref name="environment"/>; returns when all are ready, or throws with the failing node's output.
    /// </summary>
    public static async Task<LocalCluster> StartAsync(string flashlmDll, string layout, IReadOnlyList<NodeSpec> specs, IReadOnlyList<string> settings,
        IReadOnlyDictionary<string, string?>? environment = null, TimeSpan? timeout = null, CancellationToken cancellation = default)
    {
        var deadline = timeout ?? TimeSpan.FromSeconds(90);
        var cluster = new LocalCluster();
        try
        {
            var ports = FreePorts(specs.Count);
            for (int i = 0; i < specs.Count; i++)
            {
                var psi = flashlmDll.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) ? new ProcessStartInfo("dotnet") : new ProcessStartInfo(flashlmDll);
                if (psi.FileName == "dotnet") psi.ArgumentList.Add(flashlmDll);
                psi.RedirectStandardOutput = psi.RedirectStandardError = true;
                psi.UseShellExecute = false;
                foreach (var a in new[] { "node", "--model", layout, "--hostname", "127.0.0.1", "--port", ports[i].ToString(), "--seed", $"127.0.0.1:{ports[0]}" })
                    psi.ArgumentList.Add(a);
                if (specs[i].Layers is { } l)
                {
                    psi.ArgumentList.Add("--layers");
                    psi.ArgumentList.Add(l);
                }
                if (specs[i].Http)
                {
                    psi.ArgumentList.Add("--http");
                    psi.ArgumentList.Add("http://127.0.0.1:0");
                }
                foreach (var s in settings)
                {
                    psi.ArgumentList.Add("--set");
                    psi.ArgumentList.Add(s);
                }
                foreach (var (k, v) in environment ?? new Dictionary<string, string?>())
                {
                    if (v is null) psi.Environment.Remove(k);
                    else psi.Environment[k] = v;
                }
                var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
                var node = new Node(i, specs[i], ports[i], process);
                cluster._nodes.Add(node);
                Watch(node);
            }
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
            cts.CancelAfter(deadline);
            foreach (var node in cluster._nodes)
            {
                try
                {
                    await node.Ready.Task.WaitAsync(cts.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (!cancellation.IsCancellationRequested)
                {
                    throw new TimeoutException($"node {node.Index} ({node.Address}) was not ready within {deadline.TotalSeconds:0} s; its output:\n{node.Output}");
                }
            }
            await cluster.WaitForMembersAsync(specs.Count, cts.Token).ConfigureAwait(false);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static void Watch(Node node)
    {
        void Line(string? line, bool stdout)
        {
            if (line is null) return;
            lock (node.Log) node.Log.AppendLine(line);
            if (!stdout) return;
            if (line.StartsWith("flashlm: serving on ", StringComparison.Ordinal)) node.Http = new Uri(line["flashlm: serving on ".Length..].Trim());
            if (line.StartsWith("flashlm: node ", StringComparison.Ordinal) && !node.Spec.Http) node.Ready.TrySetResult();
            if (node.Http is not null) node.Ready.TrySetResult();
        }
        node.Process.OutputDataReceived += (_, e) => Line(e.Data, stdout: true);
        node.Process.ErrorDataReceived += (_, e) => Line(e.Data, stdout: false);
        node.Process.EnableRaisingEvents = true;
        node.Process.Exited += (_, _) => node.Ready.TrySetException(new InvalidOperationException(
            $"node {node.Index} ({node.Address}) exited with {SafeExitCode(node.Process)} before it was ready; its output:\n{node.Output}"));
        node.Process.BeginOutputReadLine();
        node.Process.BeginErrorReadLine();
    }

    private static string SafeExitCode(Process p)
    {
        try
        {
            return p.ExitCode.ToString();
        }
        catch (InvalidOperationException)
        {
            return "?";
        }
    }

    /// <summary>Waits until every HTTP node's /health reports <paramref name="members"/> members up.</summary>
    public async Task WaitForMembersAsync(int members, CancellationToken cancellation)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        foreach (var node in _nodes.Where(n => n.Http is not null && !n.Exited))
        {
            int seen = -1;
            while (true)
            {
                try
                {
                    using var doc = JsonDocument.Parse(await http.GetStringAsync(new Uri(node.Http!, "/health"), cancellation).ConfigureAwait(false));
                    if (doc.RootElement.TryGetProperty("cluster_members", out var m) && (seen = m.GetInt32()) == members) break;
                }
                catch (HttpRequestException)
                {
                }
                catch (TaskCanceledException) when (!cancellation.IsCancellationRequested)
                {
                }
                try
                {
                    await Task.Delay(200, cancellation).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    throw new TimeoutException($"node {node.Index} saw {seen} of {members} cluster members up when the wait ran out");
                }
            }
        }
    }

    /// <summary>Kills node <paramref name="index"/> at once (SIGKILL: a crash, not a leave).</summary>
    public void Kill(int index)
    {
        var p = _nodes[index].Process;
        if (!p.HasExited) p.Kill(entireProcessTree: true);
        p.WaitForExit(10_000);
    }

    /// <summary>The node whose cluster address is <paramref name="address"/>.</summary>
    public Node At(string address) => _nodes.FirstOrDefault(n => n.Address == address) ?? throw new ArgumentException($"no node is at {address}");

    /// <summary>Stops every node (SIGTERM, then SIGKILL after 5 s).</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var n in _nodes)
        {
            try
            {
                if (!n.Process.HasExited) Terminate(n.Process);
            }
            catch (InvalidOperationException)
            {
            }
        }
        foreach (var n in _nodes)
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await n.Process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                n.Process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
            }
            n.Process.Dispose();
        }
    }

    private static void Terminate(Process p)
    {
        if (OperatingSystem.IsWindows())
        {
            p.Kill(entireProcessTree: true);
            return;
        }
        // SIGTERM: the node leaves the cluster and closes its runtime.
        _ = kill(p.Id, 15);
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>Ports free on loopback now (held together while picked, so they differ).</summary>
    private static int[] FreePorts(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        foreach (var l in listeners) l.Start();
        var ports = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        foreach (var l in listeners) l.Stop();
        return ports;
    }
}
