"""The synthetic data's vocabulary: scenarios per (folder, priority) cell and the words that fill their slots.

A scenario is one kind of notification (a code review request, a parcel delay, a flash sale) with
alternative apps, senders, titles and bodies separated by `|`. `{slot}` names a list in SLOTS or a
number generator in worker.synth.sampler; `{sender}` in a title repeats the notification's sender. Some
scenarios are deliberately hard: urgent-sounding promotions, work messages sent over WhatsApp,
social plans posted in Slack, bank offers that are not alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

# The reference's label mix: P(folder), then P(priority | folder) chosen so that the marginal is
# about 51% / 28% / 21% for priorities 1 / 2 / 3.
FOLDER_MIX: dict[str, float] = {"Work": 0.40, "Personal": 0.27, "Promotions": 0.18, "Alerts": 0.15}
PRIORITY_GIVEN_FOLDER: dict[str, tuple[float, float, float]] = {
    "Work": (0.45, 0.33, 0.22),
    "Personal": (0.50, 0.30, 0.20),
    "Promotions": (0.85, 0.13, 0.02),
    "Alerts": (0.28, 0.29, 0.43),
}


@dataclass(frozen=True)
class Scenario:
    """One kind of notification with its label; each text field lists alternatives."""

    folder: str
    priority: int
    apps: tuple[str, ...]
    senders: tuple[str, ...]
    titles: tuple[str, ...]
    bodies: tuple[str, ...]


def _s(folder: str, priority: int, apps: str, senders: str, titles: str, bodies: str) -> Scenario:
    return Scenario(folder, priority, *(tuple(part.split("|")) for part in (apps, senders, titles, bodies)))


WORK_CHAT = "Slack|Microsoft Teams|Google Chat|Mattermost"
SOCIAL_CHAT = "WhatsApp|Messages|Signal|Telegram|Messenger"
MAIL = "Gmail|Outlook|Mail|Proton Mail"
SHOPS = "Amazon|Zalando|Nike|IKEA|Target|ASOS|Etsy|Best Buy|Sephora|H&M"

SCENARIOS: tuple[Scenario, ...] = (
    # --- Work -------------------------------------------------------------------------------------
    _s("Work", 1, WORK_CHAT, "{colleague}",
       "{colleague} reacted to your message|New message in #{channel}|#{channel}",
       "{colleague} reacted 👍 to: \"{topic} notes\"|anyone know if the coffee machine on 3 is fixed?|"
       "fyi the {topic} doc moved to the wiki, no action needed"),
    _s("Work", 1, MAIL, "{company} People Team|HR|Internal Comms",
       "{company} weekly digest|This week at {company}|Reminder: office lunch menu",
       "Highlights: new hires in {team}, the {topic} town hall recording, and Friday's menu.|"
       "Read the latest updates from the leadership team. No action needed."),
    _s("Work", 1, "GitHub|GitLab|Bitbucket", "{repo}",
       "PR #{num} merged|[{repo}] Pull request closed|{colleague} starred {repo}",
       "{colleague} merged #{num} \"{topic} cleanup\" into main.|Closed #{num}: docs typo fix.|"
       "Build passed on {colleague}'s branch feature/{topic}"),
    _s("Work", 1, "Google Calendar|Outlook Calendar|Calendly", "{colleague}",
       "Accepted: {topic} sync|{colleague} accepted your invitation|Updated: {topic} retro (next week)",
       "{colleague} has accepted the invitation for {day} at {time}.|"
       "The retro moved to next {day}, same time."),
    _s("Work", 1, "Confluence|Notion|Jira", "{colleague}",
       "{colleague} edited \"{topic} roadmap\"|Page updated|{colleague} mentioned you in a comment",
       "{colleague} made 3 edits to the page \"{topic} roadmap\".|"
       "Minor formatting changes, nothing to review."),
    _s("Work", 2, "GitHub|GitLab|Bitbucket", "{colleague}",
       "Review requested: #{num}|{colleague} requested your review|[{repo}] Review required",
       "{colleague} requested your review on #{num} \"Add {topic} retries\". Due before the {day} release.|"
       "Please take a look at my PR when you get a chance today"),
    _s("Work", 2, "Jira|Linear|Asana|Trello", "{colleague}",
       "{ticket} assigned to you|You were assigned {ticket}|Due {day}: {ticket}",
       "{colleague} assigned {ticket} \"{topic} export fails for large accounts\" to you.|"
       "Task \"Prepare {topic} slides\" is due {day}."),
    _s("Work", 2, WORK_CHAT, "{colleague}|{manager}",
       "{sender}|Message from {sender}|{sender} (DM)",
       "hey, can you send me the {topic} numbers before end of day?|when you have a sec today, "
       "can we go over the {topic} estimate?|could you look at the {topic} question from the client today?"),
    _s("Work", 2, "Google Calendar|Outlook Calendar|Zoom", "{colleague}",
       "Invitation: {topic} planning @ {day} {time}|New event: {topic} review|Meeting tomorrow at {time}",
       "{colleague} invited you to \"{topic} planning\" on {day} at {time}. RSVP.|"
       "Agenda attached. Please read the doc before the meeting tomorrow."),
    _s("Work", 2, "GitHub Actions|CircleCI|Jenkins|GitLab CI", "{repo}",
       "Build failed on feature/{topic}|❌ CI failed: {repo}|Run failed: tests (feature/{topic})",
       "3 tests failed on your branch feature/{topic}. Main is green.|"
       "Lint job failed in {repo}, commit {hex}."),
    _s("Work", 2, "Expensify|Workday|SAP Concur", "{company} Finance",
       "Expense report needs approval|Timesheet due Friday|Action needed by {day}",
       "{colleague} submitted an expense report of {money} for your approval.|"
       "Please submit your timesheet for this week by {day}."),
    _s("Work", 3, "PagerDuty|Opsgenie|Datadog|Grafana", "{service}",
       "[FIRING] {service} error rate > 5%|🔥 SEV1: {service} down|Incident #{num} triggered",
       "{service} returning 500s for 42% of requests in {region}. You are on call.|"
       "High latency on {service} (p99 8.2s). Acknowledge within 5 minutes."),
    _s("Work", 3, WORK_CHAT + "|" + SOCIAL_CHAT, "{manager}",
       "{sender}|URGENT|{sender}: need you now",
       "Client call moved to NOW, please join the bridge asap|the board deck is wrong, need the "
       "{topic} numbers fixed in the next 30 min|production is down, can you jump on a call right away?"),
    _s("Work", 3, "Google Calendar|Outlook Calendar|Zoom|Microsoft Teams", "{colleague}",
       "Starting now: {topic} review|{topic} sync in 5 minutes|Meeting started: customer escalation",
       "Your meeting with {company} starts in 5 minutes. Join link inside.|{colleague} is waiting "
       "for you in the call."),
    _s("Work", 3, "GitHub Actions|Argo CD|Jenkins|Vercel", "{repo}",
       "Deploy to production FAILED|Release {version} blocked|Rollback required: {service}",
       "Production deploy of {version} failed health checks; traffic is on the old version.|"
       "Main is red and blocking the {version} release today."),
    _s("Work", 3, MAIL, "{manager}|Legal|{company} Security",
       "Deadline today: {topic} contract|Action required before 5pm|Security incident - respond now",
       "The signed {topic} contract must reach the client today by 5pm or we lose the deal.|"
       "Your work laptop shows malware activity. Disconnect it now and call IT."),
    # --- Personal ---------------------------------------------------------------------------------
    _s("Personal", 1, SOCIAL_CHAT, "{friend}|Family group|{friend} & {friend2}",
       "{sender}|{sender}|{sender} sent a photo",
       "haha look at this 😂|{friend} sent a sticker|did you see the game last night?|"
       "lol that video you sent|Grandma shared a photo of her garden"),
    _s("Personal", 1, "Instagram|Facebook|Strava|BeReal|TikTok", "{friend}",
       "{friend} liked your photo|{friend} commented on your post|New follower",
       "{friend} liked your photo from {place}.|{friend}: \"looks amazing!\"|{friend} gave you kudos."),
    _s("Personal", 1, "Google Calendar|Facebook|Contacts", "Reminders",
       "Birthday next week: {friend}|Upcoming: {friend}'s birthday|Anniversary in 10 days",
       "{friend}'s birthday is on {day} next week.|Don't forget to plan something for next month."),
    _s("Personal", 1, WORK_CHAT, "{colleague}",
       "{colleague}|#random|#social",
       "drinks at {place} next friday if anyone is up for it 🍻|who's joining the 5k run in spring?|"
       "pics from the weekend hike are up!"),
    _s("Personal", 2, SOCIAL_CHAT, "{friend}|{family}",
       "{sender}|{sender}|Message from {sender}",
       "are we still on for dinner {day}? let me know today|can you pick up the cake for {day}? "
       "tell me by tonight|what time works for the {place} trip this weekend?"),
    _s("Personal", 2, "Google Calendar|Doctolib|Zocdoc|Calendar", "{clinic}",
       "Appointment tomorrow at {time}|Reminder: dentist {day}|Confirm your appointment",
       "Your appointment at {clinic} is tomorrow at {time}. Reply C to confirm.|"
       "Please confirm your visit on {day}."),
    _s("Personal", 2, "Venmo|PayPal|Splitwise|Tikkie", "{friend}",
       "{friend} requested {money}|Payment request|{friend} added an expense",
       "{friend} requested {money} for \"{place} tickets\".|Your share of the dinner: {money}."),
    _s("Personal", 2, MAIL, "{family}|{friend}|School office",
       "Plans for {day}|Parent-teacher meeting|RSVP for {friend}'s wedding",
       "Could you reply today whether you come on {day}?|Please sign the school trip form by "
       "tomorrow.|RSVP closes this week, let us know!"),
    _s("Personal", 3, SOCIAL_CHAT + "|Phone", "{family}|{friend}",
       "{sender}|Missed call (3) - {sender}|{sender}",
       "call me as soon as you see this, it's dad|I'm outside, where are you?? the train leaves in "
       "10 min|car broke down on the highway, can you come get me?|please pick up, it's urgent"),
    _s("Personal", 3, "Messages|Mail|ParentSquare|Phone", "{school}",
       "{school}: your child|Please call the school|Pickup needed today",
       "Your child has a fever; please pick them up within the hour.|Please call the office right "
       "away regarding {kid}."),
    _s("Personal", 3, "Google Calendar|Calendar|Doctolib", "{clinic}",
       "Now: appointment at {clinic}|Leave now for your {time} appointment|Starting in 15 minutes",
       "Your appointment at {clinic} starts in 15 minutes.|Traffic is heavy; leave now to arrive on time."),
    # --- Promotions -------------------------------------------------------------------------------
    _s("Promotions", 1, SHOPS + "|" + MAIL, "{shop}",
       "{pct} off everything|🔥 Flash sale: {pct} off|LAST CHANCE!!! {pct} OFF ENDS TONIGHT|Weekend deals",
       "Use code {promo} for {pct} off {product}. Ends {day}.|Shop new arrivals: {product} from {money}.|"
       "URGENT: your exclusive discount expires in 2 hours!!!"),
    _s("Promotions", 1, "{shop}|Mail|Gmail", "{shop}",
       "We miss you!|Something new for you|{product} is back in stock",
       "It's been a while. Here's free shipping on your next order.|Discover our {product} collection."),
    _s("Promotions", 1, "Substack|Medium|Mail|Gmail", "{newsletter}",
       "{newsletter} #{num}|This week in {topic}|Your weekly roundup",
       "Top stories about {topic}, plus our picks for the weekend.|Issue {num}: ten ideas for {topic}."),
    _s("Promotions", 1, "Spotify|Netflix|Duolingo|Uber Eats|DoorDash|Deliveroo", "{brand}",
       "New on {brand}|Try Premium free for 3 months|{pct} off your next 3 orders",
       "Your weekly mix is ready, and Premium is half price this month.|Order now and save {pct}."),
    _s("Promotions", 1, "{bank}|Mail", "{bank}",
       "Earn 5% cashback|A card offer for you|Pre-approved: {bank} Platinum",
       "You're pre-approved for a card with 0% intro APR. Apply today.|Earn points on every purchase."),
    _s("Promotions", 2, SHOPS, "{shop}",
       "Price drop on your watchlist|{product} is now {money}|Your cart is waiting",
       "The {product} you saved dropped to {money}.|Items in your cart are selling fast."),
    _s("Promotions", 2, "Starbucks|Sephora|Delta|Marriott|{shop}", "{brand}",
       "Your points expire tomorrow|Reward ending soon|Use your {money} credit by {day}",
       "You have 1,200 points expiring tomorrow. Redeem them today.|Your {money} credit expires {day}."),
    _s("Promotions", 3, "Ticketmaster|AXS|Eventbrite|StubHub", "{brand}",
       "Presale starts in 10 minutes|Your presale code: {promo}|Tickets reserved for 15 minutes",
       "The {artist} presale you signed up for opens in 10 minutes.|Your seats are held for 15 "
       "minutes; complete checkout or they are released."),
    _s("Promotions", 3, SHOPS, "{shop}",
       "Drop live NOW: {product}|Your reserved item will be released in 1 hour",
       "The limited {product} drop you registered for is live; quantities are tiny.|Complete your "
       "purchase within the hour to keep your reservation."),
    # --- Alerts -----------------------------------------------------------------------------------
    _s("Alerts", 1, "UPS|FedEx|DHL|USPS|Amazon|PostNL", "{carrier}",
       "Delivered|Your package was delivered|Shipped: order #{num}",
       "Your package was left at the front door at {time}.|Order #{num} has shipped. Track {tracking}."),
    _s("Alerts", 1, "Settings|iCloud|Google One|Dropbox|Time Machine", "{device}",
       "Backup complete|Software update available|Update installed",
       "Your {device} was backed up at {time}.|iOS {version} is available for your {device}."),
    _s("Alerts", 1, "{bank}|PayPal|Revolut", "{bank}",
       "Your statement is ready|Monthly summary|Payment received",
       "Your {month} statement is available in the app.|You received {money} from {friend}."),
    _s("Alerts", 1, "Weather|AccuWeather|Google", "Weather",
       "Rain expected this afternoon|Tomorrow: sunny, 24°|Daily forecast for {city}",
       "Light rain in {city} from 3pm.|Pollen count is moderate today."),
    _s("Alerts", 2, "UPS|FedEx|DHL|USPS|Amazon|PostNL", "{carrier}",
       "Delivery delayed|Out for delivery - signature required|Action needed: delivery",
       "Your package {tracking} is delayed; new estimate {day}.|Someone must sign for {tracking} today."),
    _s("Alerts", 2, "{bank}|Verizon|AT&T|Vodafone|Comcast|PG&E", "{biller}",
       "Bill due in 3 days|Payment failed - update your card|Autopay couldn't be processed",
       "Your bill of {money} is due on {day}.|We couldn't charge your card ending {last4}. Update it to "
       "avoid interruption."),
    _s("Alerts", 2, "Settings|iCloud|Google One|Battery", "{device}",
       "Storage almost full|Battery low (20%)|Password expires in 5 days",
       "Your iCloud storage is 95% full.|Your {device} battery is at 20%.|"
       "Change your password within 5 days."),
    _s("Alerts", 3, "Google|Microsoft|Apple ID|{bank}|Instagram", "{account}",
       "New sign-in from unknown device|Security alert|Was this you?",
       "Someone signed in to your account from {city} on a new Windows device. If this wasn't you, "
       "secure your account now.|Your password was changed. Didn't do it? Reset it immediately."),
    _s("Alerts", 3, "{bank}|Revolut|Chase|Amex|PayPal", "{bank}",
       "Suspicious transaction|Fraud alert: card ending {last4}|Card blocked",
       "Did you try to spend {money} at an online store? Reply YES or NO.|We blocked your card ending "
       "{last4} after unusual activity. Call us now."),
    _s("Alerts", 3, "Messages|{bank}|Google|Microsoft", "{account}",
       "Your verification code|Login code|{code} is your code",
       "{code} is your verification code. It expires in 5 minutes. Don't share it.|"
       "Use {code} to sign in. If you didn't request this, someone may be trying to access your account."),
    _s("Alerts", 3, "Nest|Ring|Emergency Alerts|Weather|SimpliSafe", "{device}",
       "Smoke detected in the kitchen|Severe weather warning|Motion at front door - alarm armed",
       "Smoke alarm triggered at home at {time}.|Flash flood warning for {city} until {time}. Avoid travel."),
)

SLOTS: dict[str, tuple[str, ...]] = {
    "colleague": ("Priya Shah", "Tom Becker", "Ana López", "Kenji Watanabe", "Sam O'Neill", "Fatima Noor",
                  "Lukas Meyer", "Chloe Martin", "Dev Patel", "Marta Kowalska", "Jonas", "Aisha", "Raj K."),
    "manager": ("Helen (manager)", "David Chen", "Sarah Miller", "your manager", "Olu Adeyemi", "Boss"),
    "friend": ("Mia", "Jake", "Lena", "Carlos", "Zoe", "Ben", "Noor", "Emma", "Luca", "Sofia", "Max", "Ines"),
    "friend2": ("Tariq", "Julia", "Pete", "Hanna", "Oscar"),
    "family": ("Mom", "Dad", "Grandma", "Sis", "Uncle Joe", "Honey ❤️", "Alex (husband)", "Maria (wife)"),
    "kid": ("Lily", "Noah", "Emma", "Leo"),
    "school": ("Oakwood Elementary", "St Mary's School", "Lincoln High", "Kita Sonnenschein"),
    "clinic": ("Smile Dental", "Dr. Weber", "City Health Clinic", "Vision Center", "Physio Plus"),
    "company": ("Acme", "Globex", "Initech", "Northwind", "Contoso", "Umbrella Corp", "Stark Industries"),
    "team": ("Platform", "Payments", "Growth", "Data", "Mobile", "Sales Ops"),
    "channel": ("general", "eng-backend", "team-growth", "incidents", "random", "design-reviews"),
    "topic": ("Q3 budget", "onboarding", "search", "billing", "pricing", "migration", "roadmap", "API",
              "customer churn", "hiring", "security audit", "launch"),
    "repo": ("acme/api", "web-app", "infra-terraform", "mobile-ios", "data-pipeline", "payments-svc"),
    "service": ("checkout-api", "auth-service", "payments", "search-index", "db-primary", "kafka-cluster"),
    "region": ("eu-west-1", "us-east-1", "ap-south-1"),
    "version": ("v2.14.0", "v3.1.2", "17.4", "1.9.0-rc1", "2024.06"),
    "ticket": ("OPS-{num}", "PROJ-{num}", "BUG-{num}", "SUP-{num}"),
    "shop": ("Amazon", "Zalando", "Nike", "IKEA", "Target", "ASOS", "Etsy", "Best Buy", "Sephora", "H&M"),
    "brand": ("Spotify", "Netflix", "Duolingo", "Uber Eats", "Starbucks", "Ticketmaster", "Airbnb"),
    "product": ("running shoes", "headphones", "sofa covers", "winter jackets", "smart watches", "skincare",
                "coffee makers", "gaming chairs", "sneakers"),
    "newsletter": ("The Morning Brew", "TechCrunch Daily", "Product Hunt", "The Hustle",
                   "Lenny's Newsletter"),
    "artist": ("Taylor Swift", "Coldplay", "Bad Bunny", "Billie Eilish", "Arctic Monkeys"),
    "promo": ("SAVE20", "WELCOME10", "VIP-{code}", "FLASH{num}"),
    "bank": ("Chase", "Bank of America", "Revolut", "Monzo", "ING", "Wells Fargo", "N26", "Barclays"),
    "biller": ("Verizon", "Comcast", "PG&E", "Vodafone", "Chase", "City Water"),
    "account": ("Google", "Microsoft account", "Apple ID", "Instagram", "Chase", "Coinbase"),
    "carrier": ("UPS", "FedEx", "DHL", "USPS", "Amazon Logistics", "PostNL"),
    "device": ("iPhone", "MacBook Pro", "Pixel 8", "Galaxy S23", "iPad", "front door camera", "Nest Protect"),
    "place": ("Lisbon", "the lake", "Joe's Bar", "the cinema", "Barcelona", "the beach house", "the park"),
    "city": ("Berlin", "Austin", "London", "Madrid", "Toronto", "Mumbai", "Sydney", "Seattle"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "the 14th"),
    "month": ("January", "March", "June", "September", "November"),
}
