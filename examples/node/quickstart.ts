// Quickstart in TypeScript, on the embedded default: no server needed.
//
//   npm install ./bindings-node
//   node --experimental-strip-types examples/node/quickstart.ts   (Node 22.6+; or compile with tsc)
//
// A producer publishes "send a welcome email" tasks; a worker handles them,
// retrying a flaky one and dead-lettering an invalid one.
import { connect, Fatal, Worker, type Job } from 'pillarbox'

interface Welcome {
  user: number
  email: string
}

async function main(): Promise<void> {
  const broker = await connect(process.env.PILLARBOX_URL ?? 'memory://quickstart')
  await broker.ensureGroup('emails', 'welcome-sender')
  const users: Array<[number, string]> = [[1, 'ada@example.com'], [2, 'flaky@example.com'], [3, 'not-an-address']]
  await broker.publish(
    'emails',
    users.map(([user, email]) => ({ payload: JSON.stringify({ user, email }), idempotencyKey: `welcome-${user}` })),
  )

  const worker = new Worker(broker, 'emails', 'welcome-sender', async (job: Job) => {
    const task = job.json<Welcome>()
    if (!task.email.includes('@')) throw new Fatal(`${task.email} is not an email address`, { kind: 'InvalidAddress' })
    if (task.email.startsWith('flaky') && job.attempt < 2) throw new Error('SMTP timeout')
    console.log(`attempt ${job.attempt}: welcome email sent to ${task.email}`)
  }, { concurrency: 4, retry: { initialDelayMs: 200 }, pollWaitMs: 100 })

  const running = worker.run()
  setTimeout(() => worker.shutdown(), 1500)
  await running
  const stats = worker.stats()
  console.log(`worker: ${stats.succeeded} succeeded, ${stats.retried} retried, ${stats.deadLettered} dead-lettered`)
  for (const dead of await broker.deadLetters('emails', 'welcome-sender')) {
    console.log(`dead letter: ${dead.reason.cause}: ${dead.reason.errorKind}: ${dead.reason.errorMessage}`)
  }
  await broker.close()
}

main().catch((e: unknown) => {
  console.error(e)
  process.exit(1)
})
