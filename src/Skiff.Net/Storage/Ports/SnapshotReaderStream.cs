namespace Skiff.Net.Storage.Ports;

/// <summary>A snapshot's <see cref="SnapshotReader"/> as a read-only stream, for sending it.</summary>
internal sealed class SnapshotReaderStream : Stream
{
    private readonly SnapshotReader _reader;
    public SnapshotReaderStream(SnapshotReader reader) => _reader = reader;
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => _reader.Length;
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override int Read(byte[] buffer, int offset, int count) => _reader.Read(buffer.AsSpan(offset, count));
    public override int Read(Span<byte> buffer) => _reader.Read(buffer);
    // The base class would queue the synchronous read to the thread pool and wait for it.
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(_reader.Read(buffer.Span));
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        Task.FromResult(_reader.Read(buffer.AsSpan(offset, count)));
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    protected override void Dispose(bool disposing)
    {
        if (disposing) _reader.Dispose();
        base.Dispose(disposing);
    }
}
