using System.CommandLine;

namespace Skiff.Cli;

/// <summary>The membership commands: members, member add/remove/update, transfer-leader, status.</summary>
internal static class Cluster
{
    public static Command MembersCommand()
    {
        var members = new Command("members", "List the members: id, address, voter or learner");
        members.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var status = await c.GetStatusAsync(t);
            if (o.Json)
                o.Document(status.Members.Select(m => new { id = m.Id, address = m.Address, voter = m.Voter }));
            else
                foreach (var m in status.Members)
                    Console.WriteLine($"{m.Id}  {m.Address,-21}  {(m.Voter ? "voter" : "learner")}");
            return Exit.Ok;
        }));
        return members;
    }

    public static Command MemberCommand()
    {
        var member = new Command("member", "Add, remove or move a member");

        var at = new Argument<string>("HOST[:PORT]")
        {
            Description = "Address a running node started with 'skiff serve --join' advertises (the port of the first --endpoints member when not given)",
        };
        var add = new Command("add", "Add the node serving at HOST[:PORT]: asks it for its id, then asks the cluster to add it") { at };
        add.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var text = p.GetValue(at)!;
            // The endpoints passed the same checks (Commands.Run parsed them), so the first one has a port.
            Skiff.Net.Runtime.MemberAddress.TryParse(Commands.ParseEndpoints(p.GetValue(Commands.Endpoints) ?? "")[0], out _, out var port, out _);
            if (!Addresses.TryParseMember(text, port, out var endpoint, out var why))
                throw new CliException(Exit.Usage, $"'{text}' is not a HOST[:PORT] address: {why}");
            var id = await c.AddNodeAsync(endpoint, t);
            o.Done($"added {id} at {endpoint}", new { id, address = endpoint, added = true });
            return Exit.Ok;
        }));
        member.Add(add);

        var id = new Argument<string>("ID") { Description = "The member's id (a unique prefix of it is enough)" };
        var remove = new Command("remove", "Remove the member ID from the cluster") { id };
        remove.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var m = await Resolve(c, p.GetValue(id)!, t);
            await c.RemoveNodeAsync(m.Id, t);
            o.Done($"removed {m.Id} at {m.Address}", new { id = m.Id, address = m.Address, removed = true });
            return Exit.Ok;
        }));
        member.Add(remove);
        member.Add(UpdateCommand(id));
        return member;
    }

    /// <summary><c>skiff member update ID HOST:PORT</c>, as <c>etcdctl member update</c>: the member keeps its id,
    /// vote and data; the others dial it at the new address from then on, and it is restarted there.</summary>
    private static Command UpdateCommand(Argument<string> id)
    {
        var address = new Argument<string>("HOST:PORT") { Description = "The member's new address: a host name or IP address, and its port" };
        var update = new Command("update", "Give the member ID a new address (then restart it there with --advertise-address HOST:PORT)") { id, address };
        update.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var text = p.GetValue(address)!.Trim();
            if (!Skiff.Net.Runtime.MemberAddress.TryParse(text, out _, out _, out var why))
                throw new CliException(Exit.Usage, $"'{text}' is not a HOST:PORT address: {why}");
            var m = await Resolve(c, p.GetValue(id)!, t);
            await c.UpdateMemberAsync(m.Id, text, t);
            o.Done($"updated {m.Id}: {m.Address} -> {text}", new { id = m.Id, previous = m.Address, address = text, updated = true });
            return Exit.Ok;
        }));
        return update;
    }

    public static Command TransferCommand()
    {
        var id = new Argument<string?>("ID") { Description = "The voter to lead (a unique prefix of its id); any other voter if omitted", Arity = ArgumentArity.ZeroOrOne };
        var transfer = new Command("transfer-leader", "Hand leadership to the member ID") { id };
        transfer.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            Guid? target = p.GetValue(id) is { } text ? (await Resolve(c, text, t)).Id : null;
            var leader = await c.TransferLeadershipAsync(target, t);
            o.Done($"leader is now {leader}", new { leader });
            return Exit.Ok;
        }));
        return transfer;
    }

    public static Command StatusCommand()
    {
        var status = new Command("status", "A table of every member: id, address, role, term, commit, applied, leader");
        status.SetAction((p, ct) => Commands.Run(p, ct, async (c, o, t) =>
        {
            var s = await c.GetStatusAsync(t);
            if (o.Json)
                o.Document(new
                {
                    cluster = s.ClusterId,
                    leader = s.LeaderId,
                    members = s.Members.Select(m => new
                    {
                        id = m.Id,
                        address = m.Address,
                        role = Out.Role(m),
                        voter = m.Voter,
                        reachable = m.Reachable,
                        term = m.Term,
                        commit = m.CommitIndex,
                        applied = m.AppliedIndex,
                        leader = m.LeaderId,
                        error = m.Error,
                    }),
                });
            else
            {
                Out.Console.Write(new Spectre.Console.Text($"cluster {s.ClusterId?.ToString() ?? "(not known yet)"}\n"));
                Out.Console.Write(Out.StatusTable(s));
            }
            return Exit.Ok;
        }));
        return status;
    }

    /// <summary>The member whose id is, or starts with, <paramref name="text"/>; exit 5 if none, 2 if several.</summary>
    private static async Task<MemberStatus> Resolve(Client c, string text, CancellationToken t)
    {
        var status = await c.GetStatusAsync(t);
        var matches = status.Members.Where(m => m.Id.ToString().StartsWith(text.Trim().ToLowerInvariant(), StringComparison.Ordinal)).ToList();
        if (text.Trim().Length == 0) throw new CliException(Exit.Usage, "an empty member id");
        return matches.Count switch
        {
            1 => matches[0],
            0 => throw new CliException(Exit.NotFound, $"no member with id '{text}'"),
            _ => throw new CliException(Exit.Usage, $"'{text}' matches {matches.Count} members; give more of the id"),
        };
    }
}
