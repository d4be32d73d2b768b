using System.Reactive.Linq;
using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace Skiff;

/// <summary>An active watch on a prefix: committed changes under it, in commit order. Dispose it to stop.</summary>
public sealed class Subscriber : IAsyncDisposable
{
    private readonly ChannelReader<Change> _changes;
    private readonly Func<ValueTask> _stop;
    private readonly ISkiffSerializer _serializer;
    private int _disposed;

    /// <summary>Wraps a stream of changes. The reader completes (possibly with an error) when the watch ends;
    /// <paramref name="stop"/> ends it from this side.</summary>
    public Subscriber(string prefix, ChannelReader<Change> changes, Func<ValueTask> stop, ISkiffSerializer serializer)
    {
        Prefix = prefix ?? throw new ArgumentNullException(nameof(prefix));
        _changes = changes ?? throw new ArgumentNullException(nameof(changes));
        _stop = stop ?? throw new ArgumentNullException(nameof(stop));
        _serializer = serializer ?? throw new ArgumentNullException(nameof(serializer));
    }

    /// <summary>The watched prefix.</summary>
    public string Prefix { get; }

    /// <summary>The next change, whatever its kind.</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.StreamClosed"/> when the watch has ended.</exception>
    public async Task<Change> RecvChangeAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _changes.ReadAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException e)
        {
            throw e.InnerException as SkiffException
                  ?? new SkiffException(ErrorKind.StreamClosed, $"the watch on '{Prefix}' has ended", e);
        }
    }

    /// <summary>The next change as skiff-rs's <c>recv</c> gives it: the key and the new value (<c>default(T)</c> for a
    /// delete).</summary>
    /// <exception cref="SkiffException">With <see cref="ErrorKind.StreamClosed"/> when the watch has ended, or
    /// <see cref="ErrorKind.DeserializeFailed"/> when the value is not a <typeparamref name="T"/>.</exception>
    public async Task<(string Key, T? Value)> RecvAsync<T>(CancellationToken cancellationToken = default)
    {
        var change = await RecvChangeAsync(cancellationToken).ConfigureAwait(false);
        return (change.Key, change.ValueAs<T>(_serializer));
    }

    /// <summary>Every change until the watch ends or the token is cancelled.</summary>
    public async IAsyncEnumerable<Change> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var change in _changes.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return change;
    }

    /// <summary>The changes as an observable; it completes when the watch ends and errors if it breaks.</summary>
    public IObservable<Change> AsObservable() =>
        Observable.Create<Change>(async (observer, token) =>
        {
            try
            {
                await foreach (var change in _changes.ReadAllAsync(token).ConfigureAwait(false))
                    observer.OnNext(change);
                observer.OnCompleted();
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
            }
            catch (Exception e)
            {
                observer.OnError(e);
            }
        });

    /// <inheritdoc />
    public ValueTask DisposeAsync() =>
        Interlocked.Exchange(ref _disposed, 1) == 0 ? _stop() : ValueTask.CompletedTask;
}
